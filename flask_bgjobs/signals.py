"""Blinker signals sent on every job state change, with the app as sender.

Receivers get ``job=`` (the :class:`~flask_bgjobs.models.BackgroundJob`) and, where it applies,
``result=``, ``error=`` or ``reason=``::

    from flask_bgjobs.signals import job_failed

    @job_failed.connect_via(app)
    def alert(sender, job, error, **extra): ...
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

job_enqueued = _signals.signal("job-enqueued")
job_started = _signals.signal("job-started")
job_completed = _signals.signal("job-completed")
job_failed = _signals.signal("job-failed")
job_cancelled = _signals.signal("job-cancelled")
job_retrying = _signals.signal("job-retrying")

"""What each package loads when imported: the request logs need the storage engine only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def loaded_after(statement: str) -> set[str]:
    probe = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout))


def test_importing_the_request_logs_leaves_the_job_machinery_unloaded() -> None:
    loaded = loaded_after("import flask_sqlitelogs")
    assert "flask_bgjobs.sqlite" in loaded
    heavy = {"flask_bgjobs.extension", "flask_bgjobs.runner", "croniter", "requests"}
    assert not heavy & loaded


def test_the_public_names_of_flask_bgjobs_load_on_first_use() -> None:
    loaded = loaded_after("from flask_bgjobs import BackgroundJobs, Schedule, current_job")
    assert {"flask_bgjobs.extension", "flask_bgjobs.schedule"} <= loaded
    import flask_bgjobs

    assert "BackgroundJobs" in dir(flask_bgjobs)
    with pytest.raises(AttributeError, match="NoSuchThing"):
        flask_bgjobs.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018

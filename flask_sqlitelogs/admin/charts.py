"""The summary charts of a selection, as shapes the template draws in inline SVG.

Only numbers leave this module (positions, sizes, counts) plus labels that the template escapes;
no markup is built here, so nothing a client sent can reach the page unescaped.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..query import Filters
from ..store import RequestLogStore

WIDTH = 760
HEIGHT = 160
#: Durations of at most this many of the newest matching requests feed the percentiles.
DURATION_SAMPLE = 50_000
MAX_ENDPOINTS = 12


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: float
    css: str = ""


@dataclass
class Charts:
    """Everything the charts page draws."""

    per_time: list[Bar] = field(default_factory=list)
    time_unit: str = "hour"
    time_peak: int = 0
    time_first: str = ""
    time_last: str = ""
    statuses: list[Bar] = field(default_factory=list)
    endpoints: list[tuple[str, int, float, float, Bar, Bar]] = field(default_factory=list)
    sampled: int = 0
    total: int = 0


def build(store: RequestLogStore, months: Sequence[str], filters: Filters) -> Charts:
    """Compute the three charts over ``months`` for the rows matching ``filters``."""
    charts = Charts()
    hourly: Counter[int] = Counter()
    statuses: Counter[int] = Counter()
    durations: list[tuple[str | None, float]] = []
    for month in months:
        hourly.update(dict(store.hourly_counts(month, filters)))
        statuses.update(store.status_counts(month, filters))
        if len(durations) < DURATION_SAMPLE:
            durations.extend(store.durations(month, filters, DURATION_SAMPLE - len(durations)))
    charts.total = sum(statuses.values())
    _time_bars(charts, hourly)
    _status_bars(charts, statuses)
    _endpoint_bars(charts, durations)
    return charts


def _time_bars(charts: Charts, hourly: Counter[int]) -> None:
    if not hourly:
        return
    step = 3600
    first, last = min(hourly), max(hourly)
    if (last - first) // step > 24 * 62:  # more than two months of hours: count per day
        step = 86400
        buckets: Counter[int] = Counter()
        for hour, count in hourly.items():
            buckets[hour - hour % step] += count
        hourly, first, last = buckets, first - first % step, last - last % step
        charts.time_unit = "day"
    slots = (last - first) // step + 1
    peak = max(hourly.values())
    width = WIDTH / slots
    for index in range(slots):
        start = first + index * step
        count = hourly.get(start, 0)
        if not count:
            continue
        height = HEIGHT * count / peak
        label = _utc(start, "%Y-%m-%d %H:00" if step == 3600 else "%Y-%m-%d")
        charts.per_time.append(
            Bar(index * width, HEIGHT - height, max(width - 1, 1), height, label, count)
        )
    charts.time_peak = peak
    charts.time_first = _utc(first, "%Y-%m-%d %H:00")
    charts.time_last = _utc(last + step, "%Y-%m-%d %H:00")


def _status_bars(charts: Charts, statuses: Counter[int]) -> None:
    peak = max(statuses.values(), default=0)
    for row, klass in enumerate(range(1, 6)):
        count = statuses.get(klass, 0)
        width = (WIDTH - 200) * count / peak if peak else 0
        charts.statuses.append(
            Bar(60, row * 26 + 4, width, 20, f"{klass}xx", count, css=f"s{klass}xx")
        )


def _endpoint_bars(charts: Charts, durations: Iterable[tuple[str | None, float]]) -> None:
    by_endpoint: defaultdict[str, list[float]] = defaultdict(list)
    sampled = 0
    for endpoint, ms in durations:
        by_endpoint[endpoint or "(no endpoint)"].append(ms)
        sampled += 1
    charts.sampled = sampled
    busiest = sorted(by_endpoint.items(), key=lambda item: (-len(item[1]), item[0]))
    rows = []
    for name, values in busiest[:MAX_ENDPOINTS]:
        values.sort()
        rows.append((name, len(values), percentile(values, 50), percentile(values, 95)))
    peak = max((p95 for *_, p95 in rows), default=0.0) or 1.0
    scale = (WIDTH - 320) / peak
    for row, (name, count, p50, p95) in enumerate(rows):
        y = row * 30 + 4
        charts.endpoints.append(
            (
                name,
                count,
                p50,
                p95,
                Bar(220, y, max(p50 * scale, 1), 12, "p50", p50, css="p50"),
                Bar(220, y + 13, max(p95 * scale, 1), 12, "p95", p95, css="p95"),
            )
        )


def percentile(ordered: Sequence[float], rank: float) -> float:
    """The nearest-rank ``rank``-th percentile of an ascending, non-empty sequence."""
    index = max(0, min(len(ordered) - 1, -(-len(ordered) * rank // 100) - 1))
    return ordered[int(index)]


def _utc(epoch: float, pattern: str) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime(pattern)

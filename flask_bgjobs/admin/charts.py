"""The dashboard's charts as shapes that the template draws in inline SVG.

Only numbers and labels leave this module; the template escapes the labels, and the SVG uses
attributes and CSS classes only (the pages' Content-Security-Policy forbids inline styles).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

WIDTH = 720
HEIGHT = 150
TOP = 18  # room above the bars for the peak's label
BAR_WIDTH = 560  # of the horizontal bar charts
LABEL_WIDTH = 160  # room for command names left of the horizontal bars
ROW_HEIGHT = 24
OUTCOMES = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass
class DayChart:
    """Stacked bars of jobs per day by outcome."""

    rects: list[Rect] = field(default_factory=list)
    peak: int = 0
    total: int = 0
    first: str = ""
    last: str = ""
    width: int = WIDTH
    top: int = TOP
    bottom: int = TOP + HEIGHT  # the base line of the bars
    height: int = TOP + HEIGHT + 20  # of the whole drawing, with the dates below


@dataclass
class BarChart:
    """Horizontal bars, one row per command."""

    rows: list[tuple[str, Rect, str]] = field(default_factory=list)  # label, bar, value text
    width: int = BAR_WIDTH
    height: int = 0


def per_day(days: Sequence[dict[str, Any]]) -> DayChart:
    """Draw ``days`` (``{"day", "completed", "failed", "cancelled"}``, oldest first)."""
    chart = DayChart()
    if not days:
        return chart
    chart.first, chart.last = days[0]["day"], days[-1]["day"]
    chart.peak = max(sum(day[k] for k in OUTCOMES) for day in days)
    chart.total = sum(day[k] for day in days for k in OUTCOMES)
    if not chart.peak:
        return chart
    slot = WIDTH / len(days)
    for index, day in enumerate(days):
        bottom = float(TOP + HEIGHT)
        for outcome in OUTCOMES:
            count = day[outcome]
            if not count:
                continue
            height = HEIGHT * count / chart.peak
            bottom -= height
            chart.rects.append(Rect(round(index * slot + 1, 2), round(bottom, 2),
                                    round(max(slot - 2, 1), 2), round(height, 2), outcome,
                                    f"{day['day']}: {count} {outcome}"))  # fmt: skip
    return chart


def horizontal(
    rows: Sequence[dict[str, Any]], value_key: str, text: Any, css: str = "bar"
) -> BarChart:
    """One bar per row, its length ``row[value_key]`` relative to the largest; ``text(row)``
    gives the value written after it."""
    chart = BarChart(height=len(rows) * ROW_HEIGHT + 4)
    peak = max((float(row[value_key] or 0) for row in rows), default=0.0) or 1.0
    room = BAR_WIDTH - LABEL_WIDTH - 90
    for index, row in enumerate(rows):
        value = float(row[value_key] or 0)
        bar = Rect(LABEL_WIDTH, index * ROW_HEIGHT + 4, round(max(room * value / peak, 1), 2),
                   ROW_HEIGHT - 8, css, f"{row['command']}: {text(row)}")  # fmt: skip
        chart.rows.append((str(row["command"]), bar, str(text(row))))
    return chart

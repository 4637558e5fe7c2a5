"""HTML tables for Jupyter: results, attempt history, queue counts.

Jupyter shows an object as HTML when it has a `_repr_html_` method. The data classes in
`sitq.task` call these functions; this module imports nothing from sitq, so the engine can
use it without depending on any notebook machinery (and no import cycle can form).
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from typing import Any

#: Rows a history table shows before it says how many more there are: a notebook cell
#: with thousands of rows is slow to render and impossible to read.
MAX_HISTORY_ROWS = 50


def table_html(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain HTML table with escaped cells."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def short_task_name(task_name: str) -> str:
    """ "charge_card" for task shop.payments:charge_card (or shop.payments.charge_card)."""
    return task_name.replace(":", ".").rsplit(".", 1)[-1] or task_name


def task_labels(tasks: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A readable label per task id, from (task_name, task_id) pairs in the order shown.

    A name that occurs once is its own label ("send_receipt"); a name shared by several
    tasks is numbered in order of first appearance ("charge_card #1", "charge_card #2"),
    so a reader can tell the rows apart without reading hash ids.
    """
    first_seen: dict[str, str] = {}
    for name, task_id in tasks:
        first_seen.setdefault(task_id, short_task_name(name))
    totals: dict[str, int] = {}
    for name in first_seen.values():
        totals[name] = totals.get(name, 0) + 1
    seen: dict[str, int] = {}
    labels = {}
    for task_id, name in first_seen.items():
        seen[name] = seen.get(name, 0) + 1
        labels[task_id] = name if totals[name] == 1 else f"{name} #{seen[name]}"
    return labels


def result_html(result: Any) -> str:
    """One result as a two-column table (field, value)."""
    fields = [
        ("task", result.task_name),
        ("id", result.task_id),
        ("status", str(result.status)),
        ("value", repr(result.value) if result.is_success() else None),
        ("error", f"{result.error_type}: {result.error}" if result.error_type else None),
        ("attempts", _attempts_text(result.attempts, getattr(result, "max_attempts", None))),
        ("duration (s)", result.duration),
    ]
    return table_html(["field", "value"], [(k, v) for k, v in fields if v is not None])


def history_html(attempts: Iterable[Any], max_rows: int = MAX_HISTORY_ROWS) -> str:
    """Attempt records as a table, one row per attempt, oldest first.

    Tasks are labelled by name, numbered when several share one (`task_labels`). Times
    are seconds since the earliest attempt was scheduled (as in `sitq.plots`), since
    raw epoch timestamps say nothing to a reader; a FakeClock run reads 0, 1, 3 s.
    """
    records = list(attempts)
    if not records:
        return "<p>no attempts recorded</p>"
    origin = min(a.scheduled_for for a in records)
    headers = ["task", "attempt", "outcome", "error", "start (s)", "took (s)",
               "next try in (s)", "worker"]  # fmt: skip
    labels = task_labels((a.task_name, a.task_id) for a in records)
    rows = [_attempt_row(a, labels[a.task_id], origin) for a in records[:max_rows]]
    table = table_html(headers, rows)
    hidden = len(records) - len(rows)
    if hidden > 0:
        table += f"<p>… and {hidden} more attempts (of {len(records)})</p>"
    return table


def _attempt_row(attempt: Any, label: str, origin: float) -> list[Any]:
    error = None
    if attempt.error_type:
        error = f"{attempt.error_type}: {attempt.error_message or ''}".rstrip(": ")
    return [
        label,  # "charge_card #2": readable, and tells tasks of one name apart
        attempt.attempt,
        attempt.outcome,
        error,
        attempt.started_at - origin,
        attempt.duration,
        attempt.next_delay,
        attempt.worker_id,
    ]


def _attempts_text(attempts: int, max_attempts: int | None) -> str:
    return str(attempts) if max_attempts is None else f"{attempts} of {max_attempts}"


def schedules_html(schedules: Iterable[Any]) -> str:
    """Periodic tasks as a table: name, task, when it ticks, its next and last tick (UTC)."""
    rows = [
        [s.name, s.task_name, s.when, _utc(s.next_at), _utc(s.last_tick_at), s.last_error]
        for s in schedules
    ]
    if not rows:
        return "<p>no schedules</p>"
    headers = ["schedule", "task", "when", "next tick (UTC)", "last tick (UTC)", "last error"]
    return table_html(headers, rows)


def _utc(timestamp: float | None) -> str | None:
    """A tick time as people read it: "2026-01-01 09:00:00" (UTC)."""
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

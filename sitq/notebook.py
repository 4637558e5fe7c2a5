"""Jupyter glue: readable HTML tables for results, history and queue summaries.

Jupyter shows an object as HTML when it has a `_repr_html_` method, so a bare expression
in a cell (`result`, `await queue.history(task_id)`, `await queue.summary()`) prints a
table. `History` and `QueueSummary` exist for that: a list of attempts and a dict of
counts that know how to draw themselves. Their text form stays plain, for scripts.

Nothing here patches the event loop on import. In a notebook, top-level `await` already
works; `enable_asyncio_run()` is there for scripts pasted from the tutorial that call
`asyncio.run(main())` inside a cell.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sitq.task import TERMINAL, WAITING, Attempt, TaskStatus

if TYPE_CHECKING:
    from sitq.task import Result

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


def result_html(result: Result) -> str:
    """One result as a two-column table (field, value)."""
    fields = [
        ("task", result.task_name),
        ("id", result.task_id),
        ("status", str(result.status)),
        ("value", repr(result.value) if result.is_success() else None),
        ("error", f"{result.error_type}: {result.error}" if result.error_type else None),
        ("attempts", result.attempts),
        ("duration (s)", result.duration),
    ]
    return table_html(["field", "value"], [(k, v) for k, v in fields if v is not None])


def history_html(attempts: Iterable[Attempt], max_rows: int = MAX_HISTORY_ROWS) -> str:
    """Attempt records as a table, one row per attempt, oldest first.

    Times are seconds since the earliest attempt was scheduled (as in `sitq.plots`), since
    raw epoch timestamps say nothing to a reader; a FakeClock run reads 0, 1, 3 s.
    """
    records = list(attempts)
    if not records:
        return "<p>no attempts recorded</p>"
    origin = min(a.scheduled_for for a in records)
    headers = ["task", "id", "attempt", "outcome", "error", "start (s)", "took (s)",
               "next try in (s)", "worker"]  # fmt: skip
    rows = [_attempt_row(a, origin) for a in records[:max_rows]]
    table = table_html(headers, rows)
    hidden = len(records) - len(rows)
    if hidden > 0:
        table += f"<p>… and {hidden} more attempts (of {len(records)})</p>"
    return table


def _attempt_row(attempt: Attempt, origin: float) -> list[Any]:
    error = None
    if attempt.error_type:
        error = f"{attempt.error_type}: {attempt.error_message or ''}".rstrip(": ")
    return [
        attempt.task_name,
        attempt.task_id[:8],  # enough to tell tasks apart in one table
        attempt.attempt,
        attempt.outcome,
        error,
        attempt.started_at - origin,
        attempt.duration,
        attempt.next_delay,
        attempt.worker_id,
    ]


class History(list[Attempt]):
    """What `queue.history()` returns: a plain list of `Attempt`s that Jupyter shows as a
    table. Everything a list does still works (len, slicing, loops, `== [...]`)."""

    def _repr_html_(self) -> str:
        return history_html(self)


@dataclass(frozen=True)
class QueueSummary:
    """What `queue.summary()` returns: how many tasks are in each state, at one moment."""

    counts: Mapping[TaskStatus, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def waiting(self) -> int:
        """Queued, scheduled or retrying: tasks a worker has still to run."""
        return sum(self.counts.get(s, 0) for s in WAITING)

    @property
    def finished(self) -> int:
        """Succeeded, failed or cancelled: tasks that will not change on their own."""
        return sum(self.counts.get(s, 0) for s in TERMINAL)

    @property
    def dead_letters(self) -> int:
        return self.counts.get(TaskStatus.FAILED, 0)

    def __getitem__(self, status: TaskStatus | str) -> int:
        return self.counts.get(TaskStatus(status), 0)

    def __repr__(self) -> str:
        parts = ", ".join(f"{s.value}={self[s]}" for s in TaskStatus)
        return f"QueueSummary({parts}; total={self.total})"

    def _repr_html_(self) -> str:
        rows: list[tuple[str, int]] = [(s.value, self[s]) for s in TaskStatus]
        return table_html(["status", "tasks"], [*rows, ("total", self.total)])


def enable_asyncio_run() -> None:
    """Let `asyncio.run(main())` work inside a running notebook kernel.

    It applies nest-asyncio2 (the maintained fork ipykernel itself uses) to the running
    loop: call it only in a notebook that runs tutorial scripts verbatim. Top-level
    `await main()` needs no patch and is the better habit. The patch lasts until the
    kernel restarts; sitq never applies it by itself (importing sitq changes nothing).
    """
    try:
        import nest_asyncio2
    except ImportError as exc:
        raise ImportError(
            "enable_asyncio_run() needs nest-asyncio2: pip install 'sitq[notebook]' (or "
            "nest-asyncio2); or write `await main()` in the cell, which needs nothing"
        ) from exc
    nest_asyncio2.apply()

"""Jupyter glue: readable HTML tables for results, history and queue summaries.

Nothing here patches the event loop on import. In a notebook, top-level `await` already
works; `enable_asyncio_run()` is there for scripts pasted from the tutorial that call
`asyncio.run(main())` inside a cell.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sitq.task import Result


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


def enable_asyncio_run() -> None:
    """Let `asyncio.run(main())` work inside a running notebook kernel.

    It applies nest-asyncio2 (the maintained fork ipykernel itself uses) to the running
    loop: call it only in a notebook that runs tutorial scripts verbatim. Top-level
    `await main()` needs no patch and is the better habit.
    """
    import nest_asyncio2

    nest_asyncio2.apply()

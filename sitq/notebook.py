"""Jupyter glue: `asyncio.run` inside a kernel, and the HTML tables' names in one place.

A bare expression in a cell (`result`, `await queue.history(task_id)`, `await
queue.summary()`) shows as a table: `Result`, `History` and `QueueSummary` (in `sitq.task`)
draw themselves with `sitq.views.html`. They are re-exported here for notebooks.

Nothing here patches the event loop on import. In a notebook, top-level `await` already
works; `enable_asyncio_run()` is there for scripts pasted from the tutorial that call
`asyncio.run(main())` inside a cell.
"""

from __future__ import annotations

from sitq.errors import DISTRIBUTION
from sitq.overview import QueueSummary
from sitq.task import History
from sitq.views.html import history_html, result_html, table_html

__all__ = ["History", "QueueSummary", "enable_asyncio_run", "history_html", "result_html",
           "table_html"]  # fmt: skip


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
            "enable_asyncio_run() needs nest-asyncio2: pip install "
            f"'{DISTRIBUTION}[notebook]' (or nest-asyncio2); or write `await main()` in the "
            "cell, which needs nothing"
        ) from exc
    nest_asyncio2.apply()

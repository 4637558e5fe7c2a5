"""One task's path through sitq stays short enough for a student to follow.

`sitq.teaching.trace.trace` records every fresh call into a sitq module, on every thread,
while one task goes `enqueue(square, 7)` -> `worker.run_once()` -> `get_result()` on a
fresh SQLite file. The test fails when that route enters more than MAX_MODULES modules or
crosses between modules more than MAX_HOPS times (issue 22), and prints its figures
(`pytest -s` shows them; a failure shows them anyway), so a change shows what it costs.
Connecting (which starts the connection's thread) and a first empty `run_once` happen
inside the trace, so threads started then are traced too, but before `route.clear()`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from itertools import pairwise
from pathlib import Path

from sitq import TaskQueue, Worker
from sitq.backends.sqlite import SQLiteBackend
from sitq.teaching.trace import Route, trace

MAX_MODULES = 12
MAX_HOPS = 45


async def square(x: int) -> int:
    return x * x


async def one_task_route(path: Path) -> Route:
    with trace() as route:
        queue = TaskQueue(SQLiteBackend(path))
        worker = Worker(queue.backend)
        await queue.connect()
        await worker.run_once()
        route.clear()
        task_id = await queue.enqueue(square, 7)
        await worker.run_once()
        result = await queue.get_result(task_id)
    await worker.stop()
    await queue.close()
    assert result is not None and result.value == 49
    return route


STORAGE = "sitq.backends"


def sides(route: Route) -> str:
    """Where the cost is: modules and hops on the storage side (`sitq.backends.*`), on the
    engine side (everything else), and hops across the seam between them."""
    storage = [m for m in route.modules if m.startswith(STORAGE)]
    paths: dict[str, list[str]] = {}  # per thread, as `Route.hops` counts them
    for call in route.calls:
        paths.setdefault(call.thread, []).append(call.module)
    within: Counter[tuple[bool, bool]] = Counter()
    for path in paths.values():
        for a, b in pairwise(path):
            if a != b:
                within[(a.startswith(STORAGE), b.startswith(STORAGE))] += 1
    return (
        f"engine side: {len(route.modules) - len(storage)} modules, "
        f"{within[(False, False)]} hops; storage side: {len(storage)} modules, "
        f"{within[(True, True)]} hops; across: {within[(True, False)] + within[(False, True)]}"
    )


def figures(route: Route) -> str:
    """The summary, calls per module (in the order first entered), then every call."""
    per_module = Counter(call.module for call in route.calls)
    lines = [route.summary(), sides(route)]
    lines += [f"  {per_module[module]:3d} calls  {module}" for module in route.modules]
    lines.append("the route (thread, module, function), one line per call:")
    lines += [f"  {c.thread[:12]:12s} {c.module} {c.function}" for c in route.calls]
    return "\n".join(lines)


def test_one_task_enters_few_modules_with_few_hops(tmp_path: Path) -> None:
    route = asyncio.run(one_task_route(tmp_path / "queue.db"))
    shown = figures(route)
    print(shown)
    assert len(route.modules) <= MAX_MODULES and route.hops <= MAX_HOPS, (
        f"one task's route grew past {MAX_MODULES} modules / {MAX_HOPS} hops:\n{shown}"
    )

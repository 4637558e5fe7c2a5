"""One task's path through sitq stays short enough for a student to follow.

`sitq.teaching.trace.trace` records every fresh call into a sitq module, on every thread,
while one task goes `enqueue(square, 7)` -> `worker.run_once()` -> `get_result()` on a
fresh SQLite file. Issue 22 asks that route to enter at most MAX_MODULES modules and cross
between modules at most MAX_HOPS times; the figures are printed (`pytest -s` shows them, a
failure shows them anyway), so a change shows what it costs. Connecting (which starts the
connection's thread) and a first empty `run_once` happen inside the trace, so threads
started then are traced too, but before `route.clear()`.

The figures split at the seam to storage: the engine side (everything outside
`sitq.backends`) is held to its own bounds too, ENGINE_MAX_MODULES and ENGINE_MAX_HOPS
(what it costs today: a change that adds a module or a hop to it fails here).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from sitq import TaskQueue, Worker
from sitq.backends.sqlite import SQLiteBackend
from sitq.teaching.trace import Route, trace

MAX_MODULES = 12
MAX_HOPS = 45
# 10 / 35 when the engine was rewritten; periodic tasks then put their look for due ticks
# in every run_once (sitq.engine.schedules) and the Plan moved back to sitq.engine.calls,
# shared by enqueue and schedule: 12 / 38. Dependencies gave the task context its parents'
# results, and the context (with progress writes) went to sitq.engine.context, apart from
# running.py, which had grown past the line cap: 13 / 39. The leases held became the
# pipeline's in-flight set (`Slots.leases`), read by the lease keeper, so a task no longer
# enters sitq.engine.leases on its way: 12 / 37. Then (session 9): the Plan went to the
# options it resolves, the rows handed to storage joined sitq.task, the task's context is
# made only when asked for, the schedules are looked at only when a tick may be due, the
# heartbeat beats for the worker's life, and a ring with nobody listening is skipped:
# 9 / 28 (the whole route 12 / 45). Lower them as the path shrinks.
ENGINE_MAX_MODULES = 9
ENGINE_MAX_HOPS = 28
STORAGE = "sitq.backends"


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


@pytest.fixture(scope="module")
def route(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Route]:
    """The route, traced once. Nobody listens to the worker's INFO log meanwhile (an
    earlier test may have turned it on): a success is then not reported at all."""
    worker_log = logging.getLogger("sitq.worker")
    level = worker_log.level
    worker_log.setLevel(logging.WARNING)
    try:
        yield asyncio.run(one_task_route(tmp_path_factory.mktemp("path") / "queue.db"))
    finally:
        worker_log.setLevel(level)


def split(route: Route) -> tuple[list[str], Counter[tuple[bool, bool]]]:
    """The storage side's modules, and the hops counted by (from storage, to storage)."""
    paths: dict[str, list[str]] = {}  # per thread, as `Route.hops` counts them
    for call in route.calls:
        paths.setdefault(call.thread, []).append(call.module)
    hops: Counter[tuple[bool, bool]] = Counter()
    for path in paths.values():
        for a, b in pairwise(path):
            if a != b:
                hops[(a.startswith(STORAGE), b.startswith(STORAGE))] += 1
    return [m for m in route.modules if m.startswith(STORAGE)], hops


def figures(route: Route) -> str:
    """The summary, the split at the seam, calls per module (in the order first entered),
    then every call."""
    storage, hops = split(route)
    per_module = Counter(call.module for call in route.calls)
    lines = [
        route.summary(),
        f"engine side: {len(route.modules) - len(storage)} modules, "
        f"{hops[(False, False)]} hops; storage side: {len(storage)} modules, "
        f"{hops[(True, True)]} hops; across the seam: {hops[(True, False)] + hops[(False, True)]}",
    ]
    lines += [f"  {per_module[module]:3d} calls  {module}" for module in route.modules]
    lines.append("the route (thread, module, function), one line per call:")
    lines += [f"  {c.thread[:12]:12s} {c.module} {c.function}" for c in route.calls]
    return "\n".join(lines)


def test_the_engine_side_of_one_task_stays_within_its_bounds(route: Route) -> None:
    shown = figures(route)
    print(shown)
    storage, hops = split(route)
    engine_modules = len(route.modules) - len(storage)
    assert engine_modules <= ENGINE_MAX_MODULES and hops[(False, False)] <= ENGINE_MAX_HOPS, (
        f"the engine side grew past {ENGINE_MAX_MODULES} modules / {ENGINE_MAX_HOPS} hops:\n{shown}"
    )


def test_one_task_enters_few_modules_with_few_hops(route: Route) -> None:
    shown = figures(route)
    print(shown)
    assert len(route.modules) <= MAX_MODULES and route.hops <= MAX_HOPS, (
        f"one task's route grew past {MAX_MODULES} modules / {MAX_HOPS} hops:\n{shown}"
    )

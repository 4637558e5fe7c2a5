"""Follow one task through the engine: which sitq modules it enters, in what order.

`trace()` records every fresh call into a sitq module (a function starting, not a
coroutine resuming after an `await`), on every thread, while its block runs:

    with trace() as route:
        task_id = await queue.enqueue(square, 7)
        await worker.run_once()
        result = await queue.get_result(task_id)
    route.modules   # the modules entered, in the order first entered
    route.hops      # how often the path crossed from one module into another
    route.figure()  # modules down the side, step along the bottom

It uses `sys.setprofile` (and `threading.setprofile` for threads started meanwhile, or
`threading.setprofile_all_threads` where Python has it). Hops are counted per thread: a
thread's calls form one path, and two threads running at once would otherwise interleave
their calls differently from run to run. Lesson 16 draws the route; `tests/test_engine_path.py`
keeps it short.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

OWN_MODULE = __name__


@dataclass(frozen=True)
class Call:
    """One fresh call into a sitq module."""

    step: int
    module: str
    function: str
    thread: str
    at: float  # seconds since the trace began


@dataclass
class Route:
    """What `trace()` saw: the calls, and the numbers a reader (or a test) checks."""

    calls: list[Call] = field(default_factory=list)

    def clear(self) -> None:
        """Forget the calls so far and keep tracing: set-up (connecting, which starts the
        connection's thread under the tracer) done, the route to study begins here."""
        self.calls.clear()

    @property
    def modules(self) -> list[str]:
        """Every sitq module entered, in the order it was first entered."""
        return list(dict.fromkeys(call.module for call in self.calls))

    def _paths(self) -> dict[str, list[str]]:
        paths: dict[str, list[str]] = {}
        for call in self.calls:
            paths.setdefault(call.thread, []).append(call.module)
        return paths

    @property
    def hops(self) -> int:
        """Crossings from one module into another, summed over each thread's own path."""
        return sum(sum(1 for a, b in pairwise(path) if a != b) for path in self._paths().values())

    @property
    def hops_back(self) -> int:
        """Hops into a module the same thread had already been in: the path doubling back."""
        back = 0
        for path in self._paths().values():
            seen = {path[0]} if path else set()
            for a, b in pairwise(path):
                if a != b and b in seen:
                    back += 1
                seen.add(b)
        return back

    def summary(self) -> str:
        return (
            f"{len(self.modules)} modules, {self.hops} hops between modules "
            f"({self.hops_back} back into one already visited), {len(self.calls)} calls"
        )

    def figure(self, ax: Axes | None = None, *, title: str | None = None) -> Axes:
        """Modules down the side (first entered at the top), call step along the bottom."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(10, 0.32 * max(len(self.modules), 4) + 1.2))
        rows = {module: row for row, module in enumerate(self.modules)}
        threads = list(dict.fromkeys(call.thread for call in self.calls))
        for number, thread in enumerate(threads):
            mine = [call for call in self.calls if call.thread == thread]
            ax.plot(
                [call.step for call in mine],
                [rows[call.module] for call in mine],
                marker="o",
                markersize=3,
                linewidth=1,
                color=f"C{number}",
                label=thread.split("(")[0],  # "SQLiteBackend('/tmp/...')": the name is enough
            )
        ax.set_yticks(range(len(rows)), [m.removeprefix("sitq.") for m in rows])
        ax.invert_yaxis()
        ax.set_xlabel("call number")
        ax.set_title(title or self.summary(), fontsize=10)
        if len(threads) > 1:
            # below the axes: inside, it would hide the route's lowest rows
            ax.legend(title="thread", fontsize=8, loc="upper center", ncols=len(threads),
                      bbox_to_anchor=(0.5, -0.15), frameon=False)  # fmt: skip
        ax.grid(axis="x", alpha=0.3)
        return ax


def _module_of(frame: FrameType) -> str:
    name = frame.f_globals.get("__name__", "")
    return name if isinstance(name, str) else ""


@contextmanager
def trace(prefix: str = "sitq") -> Iterator[Route]:
    """Record fresh calls into modules named `prefix` or `prefix.*` while the block runs."""
    route = Route()
    seen: set[int] = set()
    kept: list[FrameType] = []  # a frame kept alive keeps its id from being reused
    started = time.perf_counter()
    lock = threading.Lock()

    def profile(frame: FrameType, event: str, _arg: Any) -> None:
        if event != "call":
            return
        module = _module_of(frame)
        if module != prefix and not module.startswith(prefix + "."):
            return
        if module == OWN_MODULE:
            return
        with lock:
            if id(frame) in seen:  # a coroutine or generator resuming: not a fresh call
                return
            seen.add(id(frame))
            kept.append(frame)
            route.calls.append(
                Call(
                    step=len(route.calls),
                    module=module,
                    function=frame.f_code.co_qualname,
                    thread=threading.current_thread().name,
                    at=time.perf_counter() - started,
                )
            )

    everywhere = getattr(threading, "setprofile_all_threads", None)
    if everywhere is not None:
        everywhere(profile)
    else:
        threading.setprofile(profile)
        sys.setprofile(profile)
    try:
        yield route
    finally:
        if everywhere is not None:
            everywhere(None)
        else:
            sys.setprofile(None)
            threading.setprofile(None)
        kept.clear()

"""Claiming ahead: a worker whose tasks are short keeps the next few in hand.

A started worker stores what finished and claims what is next in one round trip
(`sitq.settling`). When tasks take microseconds, that trip is most of a task's time, and
while it is out the worker has nothing to run. So a worker whose recent tasks were short
claims up to `concurrency` more than it can run at once and keeps them here, under lease
(the heartbeat renews them like running ones), ready to start the moment a slot frees: the
next trip to the database then overlaps with running them.

Only while tasks are short (under `AHEAD_WHEN_UNDER` seconds on average): a long task held
in one worker's hands would wait while another worker sat idle. A waiting task that is
cancelled or whose lease is lost leaves at once; at stop, waiting tasks are handed back to
the queue without using an attempt (`Worker.stop`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from sitq.backends.base import ClaimedTask

AHEAD_WHEN_UNDER = 0.005  # seconds: the average run time under which a worker claims ahead
SMOOTHING = 0.2  # weight of the newest run time in the running average


class ClaimAhead:
    """Tasks claimed ahead, waiting for a slot, and how long this worker's tasks run."""

    def __init__(self, concurrency: int, timer: Callable[[], float] = time.perf_counter) -> None:
        self.concurrency = concurrency
        self.timer = timer  # real time: this is about speed, not about the queue's clock
        self.waiting: deque[ClaimedTask] = deque()
        self._started: dict[str, float] = {}  # task id -> when it started (perf_counter)
        self._average: float | None = None  # seconds; None until a task has run

    @property
    def capacity(self) -> int:
        """How many tasks may wait here: `concurrency` while tasks are short, else none."""
        short = self._average is not None and self._average < AHEAD_WHEN_UNDER
        return self.concurrency if short else 0

    def started(self, task_id: str) -> None:
        self._started[task_id] = self.timer()

    def ran(self, task_id: str) -> None:
        """The task has run: its time goes into the average that decides the capacity."""
        began = self._started.pop(task_id, None)
        if began is None:
            return
        took = self.timer() - began
        old = took if self._average is None else self._average
        self._average = old + SMOOTHING * (took - old)

    def forget(self, task_id: str) -> None:
        self._started.pop(task_id, None)

    def remove(self, task_id: str) -> ClaimedTask | None:
        """Take a waiting task out (cancelled, or its lease lost); None if it is not here."""
        for task in self.waiting:
            if task.task_id == task_id:
                self.waiting.remove(task)
                return task
        return None

    def drain(self) -> list[ClaimedTask]:
        """Every waiting task, leaving none (the worker is stopping)."""
        tasks = list(self.waiting)
        self.waiting.clear()
        return tasks

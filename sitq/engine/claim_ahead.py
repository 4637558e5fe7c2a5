"""Claiming ahead: a worker whose tasks are short keeps the next few in hand.

A started worker stores what finished and claims what is next in one round trip
(`sitq.engine.settling`). When tasks take microseconds, that trip is most of a task's time, and
while it is out the worker has nothing to run. So a worker whose recent tasks were short
claims up to `concurrency` more than it can run at once and keeps them here, under lease
(the heartbeat renews them like running ones), ready to start the moment a slot frees: the
next trip to the database then overlaps with running them.

What keeps this from costing anything but a little latency:

- **Only while tasks are short**: the running average is under `AHEAD_WHEN_UNDER` and no
  running task has run longer than `HOLD_AT_MOST`. A long task would keep the tasks in
  hand waiting while another worker sat idle.
- **Never long in hand**: a task that has waited `HOLD_AT_MOST` goes back to the queue,
  unstarted and its attempt refunded (`state.return_unstarted`), for another worker.
- **Never started on a lapsed lease**: before a task leaves the hand, the worker checks
  by the clock that its lease is surely still good (`LeaseKeeper.safe_to_start`); a worker
  that was stalled (SIGSTOP, a blocked loop) sends it back instead of running it.
- **No attempt spent unless started**: the database stores a task claimed ahead as not
  started; a worker that dies holding it costs it no attempt. Once it starts, the next
  claim tells the database (`Slots.unrecorded_starts`).

A waiting task that is cancelled or whose lease is lost leaves at once; at stop, waiting
tasks are handed back to the queue without using an attempt (`Worker.stop`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from sitq.backends.base import ClaimedTask

AHEAD_WHEN_UNDER = 0.005  # seconds: the average run time under which a worker claims ahead
HOLD_AT_MOST = 0.05  # seconds a task waits in hand at most, and a run that pauses claiming ahead
SMOOTHING = 0.2  # weight of the newest run time in the running average


class ClaimAhead:
    """Tasks claimed ahead, waiting for a slot, and how long this worker's tasks run."""

    def __init__(self, concurrency: int, timer: Callable[[], float] = time.perf_counter) -> None:
        self.concurrency = concurrency
        self.timer = timer  # real time: this is about speed, not about the queue's clock
        self.waiting: deque[ClaimedTask] = deque()
        self._since: dict[str, float] = {}  # task id -> when it joined the hand (timer)
        self._started: dict[str, float] = {}  # task id -> when it started (timer)
        self._average: float | None = None  # seconds; None until a task has run

    @property
    def capacity(self) -> int:
        """How many tasks may wait here: `concurrency` while tasks are short, else none."""
        short = self._average is not None and self._average < AHEAD_WHEN_UNDER
        if short and self._started:
            short = self.timer() - min(self._started.values()) < HOLD_AT_MOST
        return self.concurrency if short else 0

    def hold(self, tasks: list[ClaimedTask]) -> None:
        """Claimed tasks join the hand, at its end."""
        now = self.timer()
        for task in tasks:
            self._since[task.task_id] = now
        self.waiting.extend(tasks)

    def next(self) -> ClaimedTask:
        """The task that has waited longest, taken out."""
        task = self.waiting.popleft()
        self._since.pop(task.task_id, None)
        return task

    def overdue(self) -> list[ClaimedTask]:
        """The tasks that have waited `HOLD_AT_MOST` or longer, taken out."""
        oldest_allowed = self.timer() - HOLD_AT_MOST
        out = []
        while self.waiting and self._since[self.waiting[0].task_id] <= oldest_allowed:
            out.append(self.next())
        return out

    def overdue_in(self) -> float | None:
        """Seconds until the longest-waiting task is overdue; None if none waits."""
        if not self.waiting:
            return None
        return max(0.0, self._since[self.waiting[0].task_id] + HOLD_AT_MOST - self.timer())

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
                self._since.pop(task_id, None)
                return task
        return None

    def drain(self) -> list[ClaimedTask]:
        """Every waiting task, leaving none (the worker is stopping)."""
        tasks = list(self.waiting)
        self.waiting.clear()
        self._since.clear()
        return tasks

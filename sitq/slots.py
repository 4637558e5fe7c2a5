"""A worker's slots: which tasks it holds, and how many more it may take.

A worker runs up to `concurrency` tasks at once. A task in its hands is in one of three
places:

- **running**: started, and not yet finished;
- **settling**: it has run, and its outcome is on its way to the database. Its slot is
  free already: the next task starts while the outcome travels (`sitq.settling`);
- **waiting**: claimed ahead, under lease, ready to start when a slot frees
  (`sitq.claim_ahead`).

A claim sent along with a settle *reserves* the slots it asks for until it comes back, so
that the main loop does not claim for the same slots a second time meanwhile.
"""

from __future__ import annotations

import asyncio

from sitq.backends.base import ClaimedTask
from sitq.claim_ahead import ClaimAhead


class Slots:
    """The bookkeeping behind "how many tasks should this worker claim now?"."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.running: dict[str, asyncio.Task[None]] = {}  # task id -> its asyncio task
        self.settling: set[str] = set()  # ran; outcome being stored
        self.reserved = 0  # slots held for a claim sent along with a settle
        self.ahead = ClaimAhead(concurrency)  # claimed, waiting for a slot

    def free_to_run(self) -> int:
        """Slots where a task could start now (a settling task's slot counts as free)."""
        return self.concurrency - len(self.running) + len(self.settling)

    def free_to_claim(self) -> int:
        """How many tasks to claim now: slots free to run, plus room to claim ahead, less
        the slots a claim already on its way will fill."""
        room = self.ahead.capacity - len(self.ahead.waiting)
        return self.free_to_run() + room - self.reserved

    def next_to_start(self) -> ClaimedTask | None:
        """The next waiting task, taken out, if a slot is free for it; else None."""
        if self.ahead.waiting and self.free_to_run() > 0:
            return self.ahead.waiting.popleft()
        return None

    def started(self, task_id: str, running: asyncio.Task[None]) -> None:
        self.running[task_id] = running
        self.ahead.started(task_id)

    def ran(self, task_id: str) -> bool:
        """The task has run: its slot is free while its outcome is stored. False if the
        task is not running here (nothing changes then)."""
        if task_id not in self.running:
            return False
        self.settling.add(task_id)
        self.ahead.ran(task_id)
        return True

    def forget(self, task_id: str) -> None:
        """The task is done with, outcome stored: it holds no slot any more."""
        self.running.pop(task_id, None)
        self.settling.discard(task_id)
        self.ahead.forget(task_id)

"""A worker's slots: which tasks it holds, and how many more it may take.

A worker runs up to `concurrency` tasks at once. A task in its hands is in one of three
places:

- **running**: started, and not yet finished;
- **settling**: it has run, and its outcome is on its way to the database. Its slot is
  free already: the next task starts while the outcome travels (`sitq.engine.settling`);
- **waiting**: claimed ahead, under lease, ready to start when a slot frees
  (`sitq.engine.claim_ahead`).

A worker holds at most `2 × concurrency` leased rows: `concurrency` running and at most
`concurrency` waiting. Three things keep that bound whatever mix of claims the main loop
and the settle path send: one claim is on its way at a time (`claiming`); a claim asks only
for what is left under the bound (`free_to_claim`); and a settling task's row counts as
free only because every claim leaves after its outcome is stored, or with it, in the same
transaction (the main loop leaves claiming to a flush on its way: `Worker._loop_step`).
"""

from __future__ import annotations

import asyncio

from sitq.backends.base import ClaimedTask, ClaimRequest
from sitq.engine.claim_ahead import ClaimAhead


class Slots:
    """The bookkeeping behind "how many tasks should this worker claim now?"."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.running: dict[str, asyncio.Task[None]] = {}  # task id -> its asyncio task
        self.settling: set[str] = set()  # ran; outcome being stored (or stored already)
        self.ending: set[str] = set()  # leaving unrun (cancelled, sent back): no slot, a row
        self.claiming: ClaimRequest | None = None  # the claim on its way, if any
        self.dry: bool = False  # the last claim found fewer tasks due than it asked for
        self.ahead: ClaimAhead = ClaimAhead(concurrency)  # claimed, waiting for a slot
        #: Tasks claimed ahead that started and still run, whose start the database has not
        #: been told yet: task id -> (token, when it started). The next claim tells it.
        self.unrecorded_starts: dict[str, tuple[int, float]] = {}

    def free_to_run(self) -> int:
        """Slots where a task could start now (a settling task's slot counts as free)."""
        return self.concurrency - len(self.running) + len(self.settling) + len(self.ending)

    def free_to_claim(self) -> int:
        """How many tasks to claim now: what is left under `concurrency` plus the room to
        claim ahead, counting every row this worker holds (running, ending, waiting)."""
        held = len(self.running) - len(self.settling) + len(self.ahead.waiting)
        return self.concurrency + self.ahead.capacity - held

    def starting_at_once(self, limit: int) -> int:
        """How many of a claim of `limit` tasks start the moment it lands; the rest wait in
        hand. (A slot free now has no task waiting for it, and until the claim lands only
        tasks ending free slots: no other claim is on its way.)"""
        return min(limit, max(0, self.free_to_run() - len(self.ahead.waiting)))

    def next_claim(self) -> tuple[int, int] | None:
        """(limit, ahead) of the next claim: what is left under the bound, and how many of
        those wait in hand. None while a claim is on its way, or when it would neither
        claim nor record a start."""
        if self.claiming is not None:
            return None
        limit = max(0, self.free_to_claim())
        if limit == 0 and not self.unrecorded_starts:
            return None
        return limit, limit - self.starting_at_once(limit)

    def landed(self, claimed: list[ClaimedTask]) -> None:
        """The claim on its way came back with `claimed`."""
        request, self.claiming = self.claiming, None
        self.dry = request is not None and len(claimed) < request.limit

    def next_to_start(self) -> ClaimedTask | None:
        """The next waiting task, taken out, if a slot is free for it; else None."""
        if self.ahead.waiting and self.free_to_run() > 0:
            return self.ahead.next()
        return None

    def started(self, claimed: ClaimedTask, running: asyncio.Task[None], now: float) -> None:
        self.running[claimed.task_id] = running
        self.ahead.started(claimed.task_id)
        if claimed.ahead:  # the database has it as not started
            self.unrecorded_starts[claimed.task_id] = (claimed.token, now)

    def ends_unrun(self, task_id: str, running: asyncio.Task[None]) -> None:
        """A task leaves without running (cancelled or sent back before it started): its
        outcome is stored at once, so it holds a row but no slot."""
        self.running[task_id] = running
        self.ending.add(task_id)

    def ran(self, task_id: str) -> bool:
        """The task has run: its slot is free while its outcome is stored. False if the
        task is not running here (nothing changes then)."""
        if task_id not in self.running:
            return False
        self.settling.add(task_id)
        self.ahead.ran(task_id)
        self.unrecorded_starts.pop(task_id, None)  # its outcome records its start
        return True

    def take_starts(self) -> list[tuple[str, int, float]]:
        """The starts to tell the database with the next claim (id, token, when)."""
        starts = [(task_id, token, at) for task_id, (token, at) in self.unrecorded_starts.items()]
        self.unrecorded_starts.clear()
        return starts

    def forget(self, task_id: str) -> None:
        """The task is done with, outcome stored: it holds no slot any more."""
        self.running.pop(task_id, None)
        self.settling.discard(task_id)
        self.ending.discard(task_id)
        self.ahead.forget(task_id)
        self.unrecorded_starts.pop(task_id, None)

"""The pipeline between a worker and its backend: how many tasks to claim, the tasks in
hand, and outcomes stored in batches with the next claim riding along.

The worker (`sitq.engine.worker`) asks for work (`claim`, `claim_next`), says what it took
up, what has run and what it is done with (`Slots.took`, `Slots.ran`, `Slots.forget`: one
call each), and hands back outcomes (`settle`); how many trips that takes, how outcomes
are grouped into transactions and when a claim travels with them is decided here, not in
the worker's control flow.

**Leases.** Every task the worker holds, from the moment its claim lands until it is done
with it, is in one place: `Slots.leases`. Who renews a lease? The worker's heartbeat
(`Worker._beat`) asks the lease keeper (`Pipeline.keeper`, `sitq.engine.leases`), which
renews all of `Slots.leases` in one trip; no task is registered with it one by one.

**Slots.** A worker runs up to `concurrency` tasks at once. A task in its hands is
*running*, *settling* (it has run and its outcome is on its way: its slot is free already,
so the next task starts while the outcome travels) or *waiting* (claimed ahead, under
lease). A worker holds at most `2 x concurrency` leased rows: one claim is on its way at a
time (`Slots.claiming`), a claim asks only for what is left under the bound
(`free_to_claim`), and a settling task's row counts as free only because every claim
leaves after its outcome is stored, or with it in the same transaction (the main loop
leaves claiming to a flush on its way, `flushing`, and lets the tasks it just took up run
first: their settles start that flush, `claim_next`).

**Claiming ahead.** When tasks take microseconds, the trip to the database is most of a
task's time. So a worker whose recent tasks were short (average under `AHEAD_WHEN_UNDER`,
none running longer than `HOLD_AT_MOST`) claims up to `concurrency` more and keeps them in
hand (`ClaimAhead`): the next trip overlaps with running them. A task waits `HOLD_AT_MOST`
at most, then goes back unstarted, its attempt refunded (`state.return_unstarted`); it
never starts on a lease that may have lapsed (`LeaseKeeper.safe_to_start`); and the
database stores it as not started, so a worker that dies holding it costs it no attempt,
until the next claim records its start (`Slots.unrecorded_starts`).

**Settling in batches.** The first outcome is flushed at once, and whatever finishes while
that flush is in the database goes together in the next (one transaction, one trip): under
load that batches by itself, idle it costs nothing. A flush runs in its own asyncio task,
so a caller cancelled while waiting (a stop, a Ctrl-C) does not cancel the write. A flush
that fails (SQLite "database is locked" past busy_timeout, a full disk, PostgreSQL "too many
connections") is tried again, with a pause doubling up to RETRY_MAX_PAUSE, for as long as
the task's lease is still ours (`LeaseKeeper.alive`): a finished task is thrown away only
when its lease has run out for good, and a storage error is never stored as its error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from sitq.backends.base import (
    Backend,
    ClaimedTask,
    ClaimRequest,
    Settlement,
    Signal,
    set_failed,
)
from sitq.clock import Clock
from sitq.engine.leases import Lease, LeaseKeeper
from sitq.errors import DatabaseCorruptError, QueueClosedError

logger: logging.Logger = logging.getLogger("sitq.worker")
#: Pauses before writing failed outcomes again: the first, doubling up to the last.
RETRY_FIRST_PAUSE, RETRY_MAX_PAUSE = 0.05, 1.0
#: An outcome handed in, and the future its caller awaits.
Waiting = tuple[Settlement, "asyncio.Future[bool]"]
AHEAD_WHEN_UNDER = 0.005  # seconds: the average run time under which a worker claims ahead
HOLD_AT_MOST = 0.05  # seconds a task waits in hand at most, and a run that pauses claiming ahead
SMOOTHING = 0.2  # weight of the newest run time in the running average


class ClaimAhead:
    """The hand: tasks claimed ahead, waiting for a slot, each `HOLD_AT_MOST` at most."""

    def __init__(self, timer: Callable[[], float] = time.perf_counter) -> None:
        self.timer = timer  # real time: this is about speed, not about the queue's clock
        self.waiting: deque[ClaimedTask] = deque()
        self._since: dict[str, float] = {}  # task id -> when it joined the hand (timer)

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


class Slots:
    """What this worker holds, and from that "how many tasks should it claim now?". A task
    is in `leases` (the set the lease keeper renews) from when its claim lands, or it is
    taken up in `run_once`, until the worker `forget`s it; the worker tells of each task
    three times, one call each: `took`, `ran`, `forget`."""

    def __init__(self, concurrency: int, timer: Callable[[], float] = time.perf_counter) -> None:
        self.concurrency = concurrency
        self.timer = timer  # real time, for how long tasks run (not the queue's clock)
        self.leases: dict[str, Lease] = {}  # every task held: task id -> its lease
        self.running: dict[str, asyncio.Task[None]] = {}  # task id -> its asyncio task
        self.settling: set[str] = set()  # ran; outcome being stored (or stored already)
        self.ending: set[str] = set()  # leaving unrun (cancelled, sent back): no slot, a row
        self.claiming: ClaimRequest | None = None  # the claim on its way, if any
        self.dry: bool = False  # the last claim found fewer tasks due than it asked for
        self.ahead: ClaimAhead = ClaimAhead(timer)  # claimed, waiting for a slot
        #: Tasks claimed ahead that started and still run, whose start the database has not
        #: been told yet: task id -> (token, when it started). The next claim tells it.
        self.unrecorded_starts: dict[str, tuple[int, float]] = {}
        #: A task was taken up since the main loop last asked for work (`claim_next`).
        self.just_taken: bool = False
        self._started: dict[str, float] = {}  # task id -> when it started (timer)
        self._average: float | None = None  # seconds a task runs; None until one has run

    @property
    def ahead_capacity(self) -> int:
        """How many tasks may wait in hand: `concurrency` while tasks are short (average
        under `AHEAD_WHEN_UNDER`, none running `HOLD_AT_MOST` or longer), else none."""
        short = self._average is not None and self._average < AHEAD_WHEN_UNDER
        if short and self._started:
            short = self.timer() - min(self._started.values()) < HOLD_AT_MOST
        return self.concurrency if short else 0

    def free_to_run(self) -> int:
        """Slots where a task could start now (a settling task's slot counts as free)."""
        return self.concurrency - len(self.running) + len(self.settling) + len(self.ending)

    def free_to_claim(self) -> int:
        """How many tasks to claim now: what is left under `concurrency` plus the room to
        claim ahead, counting every row this worker holds (running, ending, waiting)."""
        held = len(self.running) - len(self.settling) + len(self.ahead.waiting)
        return self.concurrency + self.ahead_capacity - held

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

    def landed(self, claimed: list[ClaimedTask], sent: float) -> None:
        """The claim on its way (sent at `sent`, on the worker's clock) came back with
        `claimed`: held from now on, they join the hand, those not claimed ahead first."""
        request, self.claiming = self.claiming, None
        self.dry = request is not None and len(claimed) < request.limit
        for task in claimed:
            self.leases[task.task_id] = (task.token, sent)
        self.ahead.hold(sorted(claimed, key=lambda task: task.ahead))

    def next_to_start(self) -> ClaimedTask | None:
        """The next waiting task, taken out, if a slot is free for it; else None."""
        if self.ahead.waiting and self.free_to_run() > 0:
            return self.ahead.next()
        return None

    def took(
        self, task: ClaimedTask, work: asyncio.Task[None], now: float, unrun: bool = False
    ) -> None:
        """The worker took a task up, as `work`: it starts now (`now`, on the worker's
        clock), or it leaves without running (`unrun`: cancelled or sent back before it
        started; its outcome is stored at once, so it holds a row but no slot)."""
        task_id = task.task_id
        self.running[task_id] = work
        self.just_taken = True
        # Held already if its claim landed in hand: that lease began earlier, and counts.
        self.leases.setdefault(task_id, (task.token, task.claimed_at))
        if unrun:
            self.ending.add(task_id)
            return
        self._started[task_id] = self.timer()
        if task.ahead:  # the database has it as not started
            self.unrecorded_starts[task_id] = (task.token, now)

    def ran(self, task_id: str) -> bool:
        """The task has run: its slot is free while its outcome is stored, and its time
        goes into the average that decides `ahead_capacity`. False if the task is not
        running here (nothing changes then)."""
        if task_id not in self.running:
            return False
        self.settling.add(task_id)
        self.unrecorded_starts.pop(task_id, None)  # its outcome records its start
        began = self._started.pop(task_id, None)
        if began is not None:
            seconds = self.timer() - began
            old = seconds if self._average is None else self._average
            self._average = old + SMOOTHING * (seconds - old)
        return True

    def take_starts(self) -> list[tuple[str, int, float]]:
        """The starts to tell the database with the next claim (id, token, when)."""
        starts = [(task_id, token, at) for task_id, (token, at) in self.unrecorded_starts.items()]
        self.unrecorded_starts.clear()
        return starts

    def forget(self, task_id: str) -> None:
        """The worker is done with the task (its outcome stored, or it left the hand for
        good): it holds no slot and no lease any more."""
        self.leases.pop(task_id, None)
        self.running.pop(task_id, None)
        self.settling.discard(task_id)
        self.ending.discard(task_id)
        self._started.pop(task_id, None)
        self.unrecorded_starts.pop(task_id, None)


class Pipeline:
    """A worker's claims and settles, and its slots. `settle` says whether the backend
    accepted an outcome (False: its fencing token was stale, another worker owns the task)."""

    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        wake: Signal,
        *,
        worker_id: str,
        concurrency: int,
        lease_seconds: float,
        default_budget: tuple[int, str],
    ) -> None:
        self.backend: Backend = backend
        self.clock: Clock = clock
        self.worker_id: str = worker_id
        self.lease_seconds: float = lease_seconds
        self.default_budget: tuple[int, str] = default_budget
        self.slots: Slots = Slots(concurrency)
        #: Renews every lease in `slots.leases` when the worker's heartbeat asks it to.
        self.keeper: LeaseKeeper = LeaseKeeper(backend, clock, worker_id, lease_seconds,
                                               self.slots.leases)  # fmt: skip
        #: Set by the worker while its loop runs: a flush then takes its next claim along.
        self.claims_along: bool = False
        #: The worker's bell, rung when a claim that went along with outcomes came back: its
        #: tasks wait in hand, and the slots it did not fill are the main loop's again.
        self.wake: Signal = wake
        self.decided: list[ClaimedTask] = []  # lost leases claims ended, to be reported
        self._claim_sent = 0.0  # when the last claim left: its leases hold from then
        self._pending: list[Waiting] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches: int = 0  # flushes so far: lets tests and benchmarks see the batching

    # -- asking for work ------------------------------------------------------------------

    def _request(self, limit: int, ahead: int = 0) -> ClaimRequest:
        """A claim of `limit` tasks, the last `ahead` to wait in hand; it records starts."""
        self._claim_sent = self.clock.now()
        return ClaimRequest(worker_id=self.worker_id, limit=limit, now=self.clock.now,
                            lease_seconds=self.lease_seconds, held=list(self.slots.leases),
                            default_budget=self.default_budget, ahead=ahead,
                            started=self.slots.take_starts())  # fmt: skip

    async def claim(self, limit: int) -> list[ClaimedTask]:
        """Claim up to `limit` tasks due now, to start at once (`run_once`): their leases
        hold from when the backend claimed them (`ClaimedTask.claimed_at`)."""
        return await self.backend.claim(self.worker_id, limit, self.clock.now,
                                        self.lease_seconds, held=list(self.slots.leases),
                                        default_budget=self.default_budget,
                                        started=self.slots.take_starts())  # fmt: skip

    async def claim_next(self) -> bool:
        """The started worker's own claim: as many as the slots allow, landing in hand.
        False when no claim left: one is on its way, a flush will take it along, there is
        no room, or the worker is stopping. Tasks taken up since the last ask get one turn
        of the event loop first: a short one settles in it, and the flush takes the claim
        along (else this claim goes alone, finds little due so soon, and the worker idles)."""
        if self.slots.just_taken:
            self.slots.just_taken = False
            await asyncio.sleep(0)  # one turn: the tasks just taken up run
        if self.flushing:
            return False
        request = self._next_claim()
        if request is None:
            return False
        claimed: list[ClaimedTask] = []
        try:
            claimed = await request.sent_to(self.backend)
        finally:
            self._land(claimed)  # also when it failed: the slots held for it free up
        return True

    def _next_claim(self) -> ClaimRequest | None:
        if not self.claims_along:
            return None
        size = self.slots.next_claim()
        if size is not None:
            self.slots.claiming = self._request(*size)
        return None if size is None else self.slots.claiming

    def _land(self, claimed: list[ClaimedTask]) -> None:
        """A claim came back (empty if it failed): its tasks join the hand, under lease,
        those not claimed ahead first. Lost leases the claim itself ended
        (`state.LOST_WHEN_SPENT`) wait only to be reported (`take_decided`)."""
        to_run = [task for task in claimed if task.decided is None]
        if len(to_run) < len(claimed):
            self.decided += [task for task in claimed if task.decided is not None]
        self.slots.landed(to_run, self._claim_sent)  # their leases hold from then

    def take_decided(self) -> list[ClaimedTask]:
        """The lost leases claims ended since the last call, for the worker to report."""
        decided, self.decided = self.decided, []
        return decided

    # -- handing back outcomes ------------------------------------------------------------

    async def settle(self, settlement: Settlement) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((settlement, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all(), name="sitq-settle")
        return await future  # cancelling the caller cancels only its wait, not the write

    @property
    def flushing(self) -> bool:
        """True while outcomes are on their way (or about to be): a flush that leaves
        from now on asks for the worker's next claim itself."""
        return self._flusher is not None and not self._flusher.done()

    async def drain(self) -> None:
        """Wait until everything handed in so far is written."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush_all(self) -> None:
        pause = RETRY_FIRST_PAUSE
        while self._pending:
            batch, self._pending = self._pending, []
            self.batches += 1
            try:
                accepted = await self._write([s for s, _ in batch])
            except Exception as exc:
                self._pending = self._kept_after(batch, exc, pause) + self._pending
                if self._pending:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RETRY_MAX_PAUSE)
                continue
            pause = RETRY_FIRST_PAUSE
            for (_, future), ok in zip(batch, accepted, strict=True):
                if not future.done():
                    future.set_result(ok)

    def _kept_after(self, batch: list[Waiting], error: Exception, pause: float) -> list[Waiting]:
        """A flush failed: the outcomes whose lease is still ours are kept for the next
        try; the others' waiters learn of the error (the worker logs it)."""
        kept: list[Waiting] = []
        dropped: list[Waiting] = []
        # A closed backend stays closed and a damaged file stays damaged: only errors that
        # time can mend (a held lock, a full disk, too many connections) are waited out.
        heals = not isinstance(error, QueueClosedError | DatabaseCorruptError)
        for item in batch:
            (kept if heals and self.keeper.alive(item[0].task_id) else dropped).append(item)
        for _, future in dropped:
            if not future.done():
                set_failed(future, error)
        if kept:
            logger.warning(
                "storing %d outcome(s) failed (%s: %s); kept, trying again in %.2gs",
                len(kept), type(error).__name__, error, pause,
            )  # fmt: skip
        return kept

    async def _write(self, settlements: list[Settlement]) -> list[bool]:
        claim = self._next_claim()
        if claim is None:
            return await self.backend.settle(settlements)
        claimed: list[ClaimedTask] = []
        try:
            accepted, claimed = await self.backend.settle_and_claim(settlements, claim)
        finally:
            self._land(claimed)  # also when it failed: the slots held for it free up
            self.wake.ring()
        return accepted

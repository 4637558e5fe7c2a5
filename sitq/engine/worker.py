"""Worker: claim due tasks, run them, settle their outcomes.

A worker's life is one loop: *claim* due tasks under a lease (`backend.claim`), *run* each
one (`sitq.engine.running`, `sitq.engine.execution`), let `sitq.policy.state` *decide*
what happens next, and *settle* that through one batched path (`sitq.engine.settling`).
Leases are kept alive by a heartbeat (`sitq.engine.leases`). Two ways to drive it:

- `await worker.start()` / `await worker.stop()`: a background loop on the current event
  loop, as in the tutorial (in a script: `asyncio.run(worker.run())`, `sitq.engine.worker_run`); it
  wakes when work is enqueued (in this process at once, from others within ms) or falls due.
- `await worker.run_once()` / `await worker.run_until_idle()`: deterministic steps for
  tests and notebooks. With a FakeClock, `run_until_idle` jumps virtual time to each retry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import socket
import uuid
from collections.abc import Mapping
from contextlib import suppress

from sitq.backends import as_backend
from sitq.backends.base import Backend, ClaimedTask, ClaimRequest, Signal, first_of
from sitq.clock import Clock, SystemClock
from sitq.engine.hooks import WorkerHooks, call_hook
from sitq.engine.leases import CANCELLED, LeaseKeeper
from sitq.engine.pools import DaemonThreadPool
from sitq.engine.rate_gate import RateGate
from sitq.engine.retention import DEFAULT_RETENTION, Pruner
from sitq.engine.running import SHUTDOWN, UNSTARTED, TaskRunner
from sitq.engine.schedules import ScheduleKeeper, horizon
from sitq.engine.settling import Settler
from sitq.engine.slots import Slots
from sitq.engine.worker_run import WorkerRun
from sitq.errors import DatabaseCorruptError
from sitq.options import concurrency_setting, count_setting, optional_seconds, seconds_setting
from sitq.policy import state
from sitq.policy.breaker import CircuitBreaker
from sitq.policy.rate_limits import RateLimit
from sitq.policy.rate_limits import parse_all as parse_rate_limits
from sitq.policy.retry import NO_RETRY, RetryPolicy
from sitq.wire.serialization import DumpsLoads, Serializer, as_serializer

logger: logging.Logger = logging.getLogger("sitq.worker")


class Worker(WorkerRun):
    """Runs tasks from a backend. See the module docstring for the two ways to drive it.

    concurrency (alias max_concurrency): tasks run at once. retry: the default RetryPolicy
    for tasks that set none (default: no retry). lease_seconds: how long a claim is valid
    without a heartbeat; heartbeats renew it every lease_seconds/3 while a task runs.
    breakers: {task name: CircuitBreaker}. rate_limits: {task name: "10/s"}, at most so many
    starts per period across all workers, for tasks that set none with `@task(rate_limit=)`.
    hooks: a WorkerHooks. clock, rng: injectable
    time and jitter randomness. shutdown_grace: seconds `stop()` waits for running tasks
    before handing them back to the queue. poll_interval: the longest an idle worker goes
    without looking (default: the backend's). retention: seconds finished tasks are kept
    before workers prune them (None: keep forever); dead letters stay until purged.
    """

    def __init__(
        self,
        backend: Backend | str,
        serializer: Serializer | DumpsLoads | None = None,
        *,
        concurrency: int | None = None,
        max_concurrency: int | None = None,
        worker_id: str | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        lease_seconds: float = 30.0,
        breakers: Mapping[str, CircuitBreaker] | None = None,
        hooks: WorkerHooks | None = None,
        rng: random.Random | None = None,
        shutdown_grace: float | None = 30.0,
        processes: int | None = None,
        poll_interval: float | None = None,
        retention: float | None = DEFAULT_RETENTION,
        rate_limits: Mapping[str, str] | None = None,
    ) -> None:
        self.concurrency: int = concurrency_setting(concurrency, max_concurrency)
        self.lease_seconds: float = seconds_setting("lease_seconds", lease_seconds)
        self.poll_interval: float | None = optional_seconds("poll_interval", poll_interval)
        self.shutdown_grace: float | None = optional_seconds(
            "shutdown_grace", shutdown_grace, allow_zero=True
        )
        self.retention: float | None = optional_seconds("retention", retention)
        if processes is not None:
            count_setting("processes", processes)
        self.backend: Backend = as_backend(backend)
        self.serializer: Serializer = as_serializer(serializer)
        self.worker_id: str = (
            worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        )
        self.clock: Clock = clock or SystemClock()
        self.retry: RetryPolicy = retry or NO_RETRY
        self.breakers: dict[str, CircuitBreaker] = dict(breakers or {})
        self.rate_limits: dict[str, RateLimit] = parse_rate_limits(rate_limits)
        self.hooks: WorkerHooks = hooks or WorkerHooks()
        self.rng: random.Random = rng or random.Random()
        self._process_count = processes
        self._slots = Slots(self.concurrency)  # running, settling, claimed ahead
        self._claim_sent = 0.0  # when the last claim left: its leases hold a lease from then
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = Signal()
        self._stopping = False
        self._connected = False
        self._pruner = Pruner(self.backend, self.clock, self.worker_id)
        look_every = self.poll_interval or self.backend.poll_interval
        self._schedules: ScheduleKeeper = ScheduleKeeper(
            self.backend, self.serializer, self.clock, look_every
        )
        self._runner: TaskRunner | None = None
        self._keeper: LeaseKeeper | None = None
        self.processed: int = 0

    def __repr__(self) -> str:
        return f"Worker({self.backend!r}, id={self.worker_id!r}, concurrency={self.concurrency})"

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background loop on the running event loop and return at once."""
        if self._loop_task is not None:
            raise RuntimeError("this worker is already started")
        await self._ensure_connected()
        self._stopping = False
        self._loop_task = asyncio.create_task(self._main_loop(), name=f"sitq-{self.worker_id}")
        self._loop_task.add_done_callback(self._loop_ended)

    async def _stop(self, grace: float | None = None) -> None:
        """`stop()` (in `sitq.engine.worker_run`): stop claiming, let running tasks finish (up to
        `grace` seconds), then hand back any still running without using an attempt."""
        self._stopping = True
        self._wake.ring()
        if self._loop_task is not None:
            # The ring ends the loop at its next check. Cancelling it instead could land
            # inside a claim, whose rows would stay leased with no one to run them.
            with suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        await self._hand_back_waiting()
        grace = self.shutdown_grace if grace is None else grace
        running_now = self._slots.running
        if running_now:
            await asyncio.wait(list(running_now.values()), timeout=grace)
        for task_id, running in list(running_now.items()):
            self.runner.stop_reasons[task_id] = SHUTDOWN
            running.cancel()
        if running_now:
            await asyncio.wait(list(running_now.values()))
        if self._runner is not None:
            await self._runner.settler.drain()  # a claim still out may bring tasks in hand
        await self._hand_back_waiting()
        await self._close()

    @property
    def runner(self) -> TaskRunner:
        if self._runner is None:
            settler = Settler(
                self.backend, self._next_claim, self._landed_with_outcomes, self.keeper.alive
            )
            self._runner = TaskRunner(
                self.worker_id,
                self.backend,
                self.serializer,
                settler,
                self.clock,
                self.rng,
                self.retry,
                self.hooks,
                self.breakers,
                DaemonThreadPool(self.concurrency),
                self._process_count,
                ran=self._ran,
                rate_gate=RateGate(self.backend, settler, self.clock, self.rate_limits),
            )
        return self._runner

    @property
    def keeper(self) -> LeaseKeeper:
        if self._keeper is None:
            self._keeper = LeaseKeeper(
                self.backend, self.clock, self.worker_id, self.lease_seconds, self._lease_ended
            )
        return self._keeper

    async def _ensure_connected(self) -> None:
        self._home = asyncio.get_running_loop()  # a stop() on another loop: sitq.engine.worker_run
        if not self._connected:
            await self.backend.connect()
            self._connected = True

    async def _close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.close()
        if self._keeper is not None:
            await self._keeper.close()
            self._keeper = None
        if self._connected:
            self._connected = False
            await self.backend.close()

    # -- deterministic drivers ------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim the tasks due now (up to `concurrency`), run them all, return how many."""
        await self._ensure_connected()
        await self._schedules.enqueue_due(force=True)
        sent = await self._request(self.concurrency).sent_to(self.backend)
        claimed = self.runner.report_decided(sent)  # lost leases the claim itself ended
        if claimed:
            await asyncio.gather(*(self._spawn(task) for task in claimed))
        return len(claimed)

    async def run_until_idle(
        self, *, max_tasks: int | None = None, until: float | dt.datetime | None = None
    ) -> int:
        """Run until no task waits, including retries and delayed tasks due later.

        With a FakeClock the waits cost no real time: the clock jumps to the next due
        task. `max_tasks` stops early (a guard against tasks that retry forever).

        Periodic tasks: ticks already due are enqueued and run, but a schedule always has
        a next tick, so the worker waits for ticks to come only up to `until` (a clock
        time: epoch seconds or an aware datetime), and runs nothing due after it:
        `run_until_idle(until=clock.now() + 86400)` runs a day of ticks on a FakeClock
        in a moment. (Several workers sharing one FakeClock: step it instead, with
        `clock.advance(...)` and each worker's `run_once()`: a worker that jumps the clock
        while another runs a task would expire that task's lease.)
        """
        last = horizon(until)
        total = 0
        while max_tasks is None or total < max_tasks:
            done = await self.run_once()
            total += done
            if done:
                continue
            next_due = await self.backend.next_due_at()
            if last is not None:
                next_due = self._schedules.sooner(next_due)
                if next_due is not None and next_due > last:
                    break
            if next_due is None:
                break
            await self.clock.sleep_until(next_due)
        return total

    # -- the background loop --------------------------------------------------------------

    async def _main_loop(self) -> None:
        """Claim and spawn until stopped. A storage error (a locked or vanished database) is
        logged and retried after a pause: a worker must not go idle silently. A damaged file
        is not: no pause mends it, so the loop ends and tells `hooks.on_worker_stopped`."""
        while not self._stopping:
            try:
                await self._loop_step()
            except Exception as exc:
                logger.exception("worker %s: error in its main loop", self.worker_id)
                if isinstance(exc, DatabaseCorruptError):
                    return call_hook(self.hooks, "on_worker_stopped", self.worker_id, exc)
                await first_of([self._wake.ticket().wait()], self._poll_interval)

    @property
    def _poll_interval(self) -> float:
        return self.poll_interval or self.backend.poll_interval

    async def _loop_step(self) -> None:
        """One turn of the main loop: enqueue the ticks of periodic tasks that have come,
        send back overdue tasks in hand, claim, or wait."""
        for task in self._slots.ahead.overdue():
            self._send_back(task)
        work_ticket, wake_ticket = self.backend.work_signal.ticket(), self._wake.ticket()
        # After the tickets: a stop() that rings while the schedules are read is not missed.
        await self._schedules.enqueue_due()
        request = None if self._leave_claim_to_settles() else self._next_claim()
        if request is None:  # until a slot frees, a claim lands, stop(), or a task is overdue
            await Signal.wait(wake_ticket, self._slots.ahead.overdue_in())
            return
        claimed: list[ClaimedTask] = []
        try:
            claimed = await request.sent_to(self.backend)
        finally:
            self._landed(claimed)
        if not self._slots.dry or self._slots.unrecorded_starts:
            return  # maybe more is due, or there are starts to record: look again at once
        # Fewer than asked: nothing else is due now. Wait (the tickets were taken before the
        # claim, so work enqueued meanwhile is not missed) instead of asking again.
        await self._pruner.now_and_then(self.retention)
        next_due = self._schedules.sooner(await self.backend.next_due_at())
        waits = [work_ticket.wait(), wake_ticket.wait(), self.clock.wait(next_due),
                 self.backend.wait_for_change(self._poll_interval)]  # fmt: skip
        await first_of(waits, self._slots.ahead.overdue_in())

    def _leave_claim_to_settles(self) -> bool:
        """Outcomes on their way to the database claim the next tasks in the same trip
        (`_next_claim`), stored first. A claim from here meanwhile would count their rows
        as free before they are (`sitq.engine.slots`), and cost a trip of its own: the main loop
        claims only when no flush is on its way."""
        return self._runner is not None and self._runner.settler.flushing

    # -- claim and spawn ------------------------------------------------------------------

    def _request(self, limit: int, ahead: int = 0) -> ClaimRequest:
        """A claim of `limit` tasks, the last `ahead` to wait in hand; it records starts."""
        self._claim_sent = self.clock.now()
        return ClaimRequest(self.worker_id, limit, self.clock.now, self.lease_seconds,
                            list(self.keeper.tokens), state.budget_of(self.retry), ahead,
                            self._slots.take_starts())  # fmt: skip

    def _next_claim(self) -> ClaimRequest | None:
        """The started worker's next claim, from the main loop or sent with a flush
        (`Slots.next_claim`), on its way until `_landed`. (Not in run_once.)"""
        if self._loop_task is None or self._stopping:
            return None
        size = self._slots.next_claim()
        if size is not None:
            self._slots.claiming = self._request(*size)
        return None if size is None else self._slots.claiming

    def _landed(self, claimed: list[ClaimedTask]) -> None:
        """A claim came back (empty if it failed): its tasks join the hand, under lease, and
        start as slots free, those not claimed ahead first (`sitq.engine.claim_ahead`). Lost leases
        the claim itself ended (`state.LOST_WHEN_SPENT`) are only reported: no lease, no run."""
        claimed = self.runner.report_decided(claimed)
        self._slots.landed(claimed)
        valid_until = self._claim_sent + self.lease_seconds
        for task in claimed:
            self.keeper.hold(task.task_id, task.token, valid_until)
        self._slots.ahead.hold(sorted(claimed, key=lambda task: task.ahead))
        self._start_waiting()

    def _landed_with_outcomes(self, claimed: list[ClaimedTask]) -> None:
        """A claim sent along with outcomes came back: the slots it did not fill are the
        main loop's again, so wake it. (Its own claims do not ring: it would wake itself.)"""
        self._landed(claimed)
        self._wake.ring()

    def _start_waiting(self) -> None:
        """Start waiting tasks as slots free; one whose lease may have lapsed goes back."""
        while not self._stopping and (task := self._slots.next_to_start()) is not None:
            if self.keeper.safe_to_start(task.task_id):
                self._spawn(task)
            else:
                self._send_back(task)

    def _send_back(self, task: ClaimedTask) -> None:
        """Back to the queue unstarted (`state.return_unstarted`), unless the lease moved on."""
        self.runner.stop_reasons[task.task_id] = UNSTARTED
        self._spawn(task)

    async def _hand_back_waiting(self) -> None:
        """Stopping: tasks claimed ahead go back to the queue, their attempt refunded."""
        waiting = self._slots.ahead.drain()
        if waiting:
            await asyncio.gather(*(self.runner.hand_back(task) for task in waiting))
        for task in waiting:
            self.keeper.release(task.task_id)

    def _ran(self, task_id: str) -> None:
        """The task has run; only its outcome is left to store, so its slot is free."""
        if self._slots.ran(task_id):
            self._start_waiting()

    def _spawn(self, claimed: ClaimedTask) -> asyncio.Task[None]:
        self.keeper.hold(claimed.task_id, claimed.token, claimed.claimed_at + self.lease_seconds)
        running = asyncio.create_task(self.runner.process(claimed))
        if claimed.task_id in self.runner.stop_reasons:  # cancelled or sent back, unstarted
            self._slots.ends_unrun(claimed.task_id, running)
        else:
            self._slots.started(claimed, running, self.clock.now())
        running.add_done_callback(lambda _: self._forget(claimed.task_id))
        return running

    def _forget(self, task_id: str) -> None:
        self._slots.forget(task_id)
        if self._keeper is not None:
            self._keeper.release(task_id)
        reason = None if self._runner is None else self._runner.stop_reasons.pop(task_id, None)
        if reason != UNSTARTED:
            self.processed += 1
        self._start_waiting()
        self._wake.ring()

    def _lease_ended(self, task_id: str, reason: str) -> None:
        """The heartbeat found a lease lost or a cancel requested: stop that task."""
        waiting = self._slots.ahead.remove(task_id)
        if waiting is not None:  # it never started: a cancel settles it, a loss drops it
            if reason == CANCELLED:
                self.runner.stop_reasons[task_id] = reason
                self._spawn(waiting)
            else:
                self.keeper.release(task_id)
            return
        running = self._slots.running.get(task_id)
        if running is not None:
            self.runner.stop_reasons[task_id] = reason
            running.cancel()

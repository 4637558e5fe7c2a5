"""Worker: claim due tasks, run them, let `sitq.policy.state` decide, settle what it decided.

The worker asks `self.pipeline` (`sitq.engine.pipeline`) for work (`run_once`, or
`_loop_step` when started), and each claimed task goes through `Worker._work`, in order:

    ending = await self._run(task)            run it (sitq.engine.running); state decides
    await self.pipeline.settle(ending...)     store what was decided
    self._report(ending)                      then log it and call the hooks

How many tasks to claim, which wait in hand, how outcomes are grouped into transactions and
when the next claim travels with them is the pipeline's business, not this module's. The
worker keeps the leases alive (`_beat`, through `sitq.engine.leases`) and stops a task
whose lease ended: the leases renewed are those of the tasks the pipeline's slots hold
(`Slots.leases`). No engine module calls back into the worker: the pipeline and the
runner only answer. Two ways to drive it:

- `await worker.start()` / `await worker.stop()`: a background loop on the current event
  loop, as in the tutorial (in a script: `asyncio.run(worker.run())`, see
  `sitq.engine.worker_run`); it wakes when work is enqueued (in this process at once, from
  others within ms) or falls due.
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

from sitq.backends import as_backend
from sitq.backends.base import Backend, ClaimedTask, Signal, first_of
from sitq.clock import Clock, SystemClock
from sitq.engine.hooks import WorkerHooks, call_hook
from sitq.engine.leases import CANCELLED, LeaseKeeper
from sitq.engine.pipeline import Pipeline, Slots
from sitq.engine.pools import DaemonThreadPool, Processes
from sitq.engine.rate_gate import RateGate
from sitq.engine.retention import DEFAULT_RETENTION, Pruner
from sitq.engine.running import Ending, Outcome, Prepared, TaskRunner
from sitq.engine.schedules import ScheduleKeeper, horizon
from sitq.engine.worker_run import SHUTDOWN, UNSTARTED, WorkerRun
from sitq.errors import DatabaseCorruptError, traceback_of
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
    without a heartbeat; the heartbeat renews every lease held each lease_seconds/3.
    breakers: {task name: CircuitBreaker}. rate_limits: {task name: "10/s"}, at most so many
    starts per period across all workers, for tasks that set none with `@task(rate_limit=)`.
    hooks: a WorkerHooks. clock, rng: injectable time and jitter randomness.
    shutdown_grace: seconds `stop()` waits for running tasks before handing them back to
    the queue. poll_interval: the longest an idle worker goes without looking (default:
    the backend's). retention: seconds finished tasks are kept before workers prune them
    (None: keep forever); dead letters stay until purged.
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
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = Signal()
        self._stopping = False
        self._connected = False
        self._pruner = Pruner(self.backend, self.clock, self.worker_id)
        look_every = self.poll_interval or self.backend.poll_interval
        self._schedules: ScheduleKeeper = ScheduleKeeper(
            self.backend, self.serializer, self.clock, look_every
        )
        self._heartbeat: asyncio.Task[None] | None = None
        self._heartbeat_stop = asyncio.Event()
        self._stops: dict[str, str] = {}  # task id -> why the worker stops it
        self.processed: int = 0
        self._make_parts()

    def __repr__(self) -> str:
        return f"Worker({self.backend!r}, id={self.worker_id!r}, concurrency={self.concurrency})"

    # -- one task: run -> decide -> settle -> report ----------------------------------------

    async def _work(self, task: ClaimedTask) -> None:
        """One claimed task, end to end. Never raises for anything a task does: every
        ending (success, error, time limit, cancel, lost lease, shutdown) is decided and
        stored. A task that has run frees its slot before its outcome is stored."""
        try:
            ending = await self._run(task)
            ran = ending.settlement.attempt is not None and self._slots.ran(task.task_id)
            if ran and self._slots.ahead.waiting:
                self._start_waiting()  # its slot is free while the outcome travels
            if await self.pipeline.settle(ending.settlement):
                self._report(ending)
            elif ending.settlement.attempt is not None:
                logger.warning("task %s: lease lost before settling; outcome discarded "
                               "(another worker owns it now)", task.task_id)  # fmt: skip
        except asyncio.CancelledError:
            why = self._stops.get(task.task_id)
            if why == SHUTDOWN:
                await self._settle(self.runner.handed_back(task))
            elif why is None:
                raise
        except KeyboardInterrupt:
            raise  # a real Ctrl-C on the loop's thread, in the worker's own code: stop
        except BaseException as exc:  # even SystemExit from a task's object: never fatal
            logger.error("worker %s failed to process task %s:\n%s", self.worker_id,
                         task.task_id, traceback_of(exc))  # fmt: skip

    async def _run(self, task: ClaimedTask) -> Ending:
        """Run the task and let `state` decide; an ending decided without running it (a
        cancel before it started, a lost lease, a full rate-limit window, an open breaker)
        comes back as it is."""
        why = self._stops.get(task.task_id)
        if why is not None:  # it leaves before it started: cancelled, or sent back
            return self.runner.unstarted(task, cancelled=why == CANCELLED)
        prepared = await self.runner.prepare(task, self.clock.now())
        if not isinstance(prepared, Prepared):
            return prepared
        try:
            outcome = await self.runner.call(task, prepared)
        except asyncio.CancelledError as exc:
            if self._stops.get(task.task_id) != CANCELLED:
                raise  # lost lease or shutdown: `_work` decides
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            outcome = Outcome.failed(exc)
        return self.runner.decide(
            task, outcome, prepared.policy, prepared.started, prepared.breaker
        )

    async def _settle(self, ending: Ending) -> None:
        if await self.pipeline.settle(ending.settlement):
            self._report(ending)

    def _report(self, ending: Ending) -> None:
        """The ending is stored: tell whoever listens (a success only if someone does)."""
        if ending.news:
            self.runner.report(ending)

    # -- deterministic drivers ------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim the tasks due now (up to `concurrency`), run them all, return how many."""
        await self._ensure_connected()
        now = self.clock.now()  # the worker's clock: the heartbeat counts from here
        if now >= self._schedules.look_at:  # a periodic tick may be due: enqueue it first
            await self._schedules.enqueue_due()
        claimed = await self.pipeline.claim(self.concurrency)
        for task in claimed:
            if task.decided is not None:  # a lost lease the claim itself ended: only reported
                self.runner.report_decided(task)
        to_run = [task for task in claimed if task.decided is None]
        if to_run:
            await asyncio.gather(*(self._spawn(task, now) for task in to_run))
        return len(to_run)

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
        """Claim and start until stopped. A storage error (a locked or vanished database) is
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
        hand = self._slots.ahead
        for task in hand.overdue():
            self._send_back(task)
        self._start_waiting()  # tasks a claim sent along with outcomes brought
        work_ticket, wake_ticket = self.backend.work_signal.ticket(), self._wake.ticket()
        # After the tickets: a stop() that rings while the schedules are read is not missed.
        if self.clock.now() >= self._schedules.look_at:  # a periodic tick may be due
            await self._schedules.enqueue_due()
        if not await self.pipeline.claim_next():  # until a slot frees, a claim lands, stop(),
            await Signal.wait(wake_ticket, hand.overdue_in())  # or a task in hand is overdue
            return
        self._start_waiting()
        if not self._slots.dry or self._slots.unrecorded_starts:
            return  # maybe more is due, or there are starts to record: look again at once
        # Fewer than asked: nothing else is due now. Wait (the tickets were taken before the
        # claim, so work enqueued meanwhile is not missed) instead of asking again.
        await self._pruner.now_and_then(self.retention)
        next_due = self._schedules.sooner(await self.backend.next_due_at())
        waits = [work_ticket.wait(), wake_ticket.wait(), self.clock.wait(next_due),
                 self.backend.wait_for_change(self._poll_interval)]  # fmt: skip
        await first_of(waits, hand.overdue_in())

    # -- tasks in hand ----------------------------------------------------------------------

    def _spawn(self, task: ClaimedTask, now: float) -> asyncio.Task[None]:
        """The task's turn (`_work`) begins, as an asyncio task; its lease and slot are held
        until it is done (`_forget`): the heartbeat renews the lease of every task the
        slots hold. One stopped before it started leaves unrun."""
        work = asyncio.create_task(self._work(task))
        self._slots.took(task, work, now, unrun=task.task_id in self._stops)
        work.add_done_callback(lambda _: self._forget(task.task_id))
        return work

    def _start_waiting(self) -> None:
        """Start waiting tasks as slots free; one whose lease may have lapsed goes back.
        (Lost leases claims ended are reported first: nothing of them runs.)"""
        for task in self.pipeline.take_decided():
            self.runner.report_decided(task)
        if not self._slots.ahead.waiting:
            return
        now = self.clock.now()
        while not self._stopping and (next_task := self._slots.next_to_start()) is not None:
            if self.keeper.safe_to_start(next_task.task_id):
                self._spawn(next_task, now)
            else:
                self._send_back(next_task)

    def _send_back(self, task: ClaimedTask) -> None:
        """Back to the queue unstarted (`state.return_unstarted`), unless the lease moved on."""
        self._stops[task.task_id] = UNSTARTED
        self._spawn(task, self.clock.now())

    async def _hand_back_waiting(self) -> None:
        """Stopping: tasks claimed ahead go back to the queue, their attempt refunded."""
        waiting = self._slots.ahead.drain()
        if waiting:
            await asyncio.gather(*(self._settle(self.runner.handed_back(t)) for t in waiting))
        for task in waiting:
            self._release(task.task_id)

    def _forget(self, task_id: str) -> None:
        self._release(task_id)
        if self._stops.pop(task_id, None) != UNSTARTED:
            self.processed += 1
        if self._slots.ahead.waiting or self.pipeline.decided:  # (in run_once, never)
            self._start_waiting()
        if self._loop_task is not None:
            self._wake.ring()  # a slot is free: the main loop may claim

    # -- leases: the heartbeat --------------------------------------------------------------

    def _release(self, task_id: str) -> None:
        """Done with the task: its slot and its lease go."""
        self._slots.forget(task_id)

    async def _beat(self, stop: asyncio.Event, began: float) -> None:
        """Who renews a lease: this heartbeat, every lease_seconds/3 (from the start of the
        last beat, or `began`), from the worker's first turn to its stop. Each beat renews
        the leases the slots hold (`Slots.leases`, all of them, in one trip through
        `LeaseKeeper.renew`); a beat with none costs nothing. A lease taken between two
        beats is renewed at the next, at most lease_seconds/3 later. A failed renewal is
        logged and tried again: the heartbeat must not stop silently."""
        while not stop.is_set():
            if await self.clock.wait(began + self.lease_seconds / 3, stop):
                return
            began = self.clock.now()
            if not self._slots.leases:
                continue
            try:
                await self._renew_leases()
            except Exception:
                logger.exception("worker %s: lease renewal failed; retrying", self.worker_id)

    async def _renew_leases(self) -> None:
        """Renew every lease held now; stop the tasks whose lease ended."""
        for task_id, why in (await self.keeper.renew()).items():
            self._lease_ended(task_id, why)

    def _lease_ended(self, task_id: str, why: str) -> None:
        """A renewal found a lease lost or a cancel requested: stop that task."""
        waiting = self._slots.ahead.remove(task_id)
        if waiting is not None:  # it never started: a cancel settles it, a loss drops it
            if why == CANCELLED:
                self._stops[task_id] = why
                self._spawn(waiting, self.clock.now())
            else:
                self._release(task_id)
            return
        work = self._slots.running.get(task_id)
        if work is not None:
            self._stops[task_id] = why
            work.cancel()

    # -- lifecycle ------------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        """Connect on the first turn, and start the heartbeat: it beats until the worker
        stops (on this event loop: a worker driven again on another loop gets a new one)."""
        self._home = loop = asyncio.get_running_loop()  # a stop() on another loop: worker_run
        if not self._connected:
            await self.backend.connect()
            self._connected = True
        beat = self._heartbeat
        if beat is None or beat.done() or beat.get_loop() is not loop:
            self._heartbeat_stop = stop = asyncio.Event()  # this heartbeat's own
            began = self.clock.now()
            self._heartbeat = asyncio.create_task(self._beat(stop, began), name="sitq-heartbeat")

    def _make_parts(self) -> None:
        """The worker's parts, made fresh (also after a stop: a worker can start again)."""
        self.runner: TaskRunner = TaskRunner(
            worker_id=self.worker_id,
            backend=self.backend,
            serializer=self.serializer,
            clock=self.clock,
            rng=self.rng,
            retry=self.retry,
            hooks=self.hooks,
            breakers=self.breakers,
            threads=DaemonThreadPool(self.concurrency),
            processes=Processes(self._process_count),
            rate_gate=RateGate(backend=self.backend, clock=self.clock, limits=self.rate_limits),
        )
        self.pipeline: Pipeline = Pipeline(self.backend, self.clock, self._wake,
                                           worker_id=self.worker_id, concurrency=self.concurrency,
                                           lease_seconds=self.lease_seconds,
                                           default_budget=state.budget_of(self.retry))  # fmt: skip
        self._slots: Slots = self.pipeline.slots
        self.keeper: LeaseKeeper = self.pipeline.keeper  # renews what the slots hold

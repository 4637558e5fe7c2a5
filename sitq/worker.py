"""Worker: claim due tasks, run them, settle their outcomes.

A worker's life is one loop: *claim* due tasks under a lease, *run* each one
(`sitq.execution`), *decide* what happens next (`sitq.decision`), and *settle* that in the
backend. Two ways to drive it:

- `await worker.start()` / `await worker.stop()`: a background loop on the current event
  loop, as in the tutorial; it wakes when work is enqueued or falls due.
- `await worker.run_once()` / `await worker.run_until_idle()`: deterministic steps for
  tests and notebooks. With a FakeClock, `run_until_idle` jumps virtual time to each retry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import uuid
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from dataclasses import replace

from sitq.backends.base import Backend, ClaimedTask, Settlement, Signal
from sitq.breaker import CircuitBreaker
from sitq.clock import Clock, SystemClock
from sitq.context import TaskContext, reset_current, set_current
from sitq.decision import Decision, decide
from sitq.execution import Outcome, run_call
from sitq.hooks import TaskEvent, WorkerHooks, call_hook
from sitq.options import TaskOptions, options_of
from sitq.retry import NO_RETRY, RetryPolicy, WorkerLost
from sitq.serialization import CloudpickleSerializer, Serializer, TaskCall
from sitq.task import Attempt, TaskStatus

logger = logging.getLogger("sitq.worker")


class Worker:
    """Runs tasks from a backend. See the module docstring for the two ways to drive it.

    concurrency (alias max_concurrency): tasks run at once. retry: the default RetryPolicy
    for tasks that set none (default: no retry). lease_seconds: how long a claim is valid
    without a heartbeat; heartbeats renew it every lease_seconds/3 while a task runs.
    breakers: {task name: CircuitBreaker}. hooks: a WorkerHooks. clock, rng: injectable
    time and jitter randomness. shutdown_grace: seconds `stop()` waits for running tasks
    before handing them back to the queue.
    """

    def __init__(
        self,
        backend: Backend,
        serializer: Serializer | None = None,
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
    ) -> None:
        if concurrency is not None and max_concurrency is not None:
            raise ValueError("give concurrency= or its alias max_concurrency=, not both")
        chosen = concurrency if concurrency is not None else max_concurrency
        self.concurrency = 10 if chosen is None else chosen
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {self.concurrency!r}")
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds!r}")
        self.backend = backend
        self.serializer = serializer or CloudpickleSerializer()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.clock = clock or SystemClock()
        self.retry = retry or NO_RETRY
        self.lease_seconds = lease_seconds
        self.breakers = dict(breakers or {})
        self.hooks = hooks or WorkerHooks()
        self.rng = rng or random.Random()
        self.shutdown_grace = shutdown_grace
        self._threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sitq-task")
        self._process_count = processes
        self._processes: ProcessPoolExecutor | None = None
        self._leases: dict[str, int] = {}  # task id -> fencing token, while running
        self._running: dict[str, asyncio.Task[None]] = {}
        self._stop_reasons: dict[str, str] = {}  # task id -> why we cancelled it
        self._loop_task: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._wake = Signal()
        self._stopping = False
        self._connected = False
        self.processed = 0

    def __repr__(self) -> str:
        return f"Worker({self.backend!r}, id={self.worker_id!r}, concurrency={self.concurrency})"

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the background loop on the running event loop and return at once."""
        if self._loop_task is not None:
            raise RuntimeError("this worker is already started")
        await self._ensure_connected()
        self._stopping = False
        self._loop_task = asyncio.create_task(self._main_loop(), name=f"sitq-{self.worker_id}")

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming, let running tasks finish (up to `grace` seconds), then hand back
        any still running to the queue without using an attempt."""
        self._stopping = True
        self._wake.ring()
        if self._loop_task is not None:
            # The ring ends the loop at its next check. Cancelling it instead could land
            # inside a claim, whose rows would stay leased with no one to run them.
            with suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        grace = self.shutdown_grace if grace is None else grace
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=grace)
        for task_id, running in list(self._running.items()):
            self._stop_reasons[task_id] = "shutdown"
            running.cancel()
        if self._running:
            await asyncio.wait(list(self._running.values()))
        await self._close()

    async def _ensure_connected(self) -> None:
        if not self._connected:
            await self.backend.connect()
            self._connected = True

    async def _close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        self._threads.shutdown(wait=False)
        self._threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sitq-task")
        if self._processes is not None:
            self._processes.shutdown(wait=False, cancel_futures=True)
            self._processes = None
        if self._connected:
            self._connected = False
            await self.backend.close()

    # -- deterministic drivers ------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim the tasks due now (up to `concurrency`), run them all, return how many."""
        await self._ensure_connected()
        claimed = await self._claim(self.concurrency)
        if claimed:
            await asyncio.gather(*(self._spawn(task) for task in claimed))
        return len(claimed)

    async def run_until_idle(self, *, max_tasks: int | None = None) -> int:
        """Run until no task waits, including retries and delayed tasks due later.

        With a FakeClock the waits cost no real time: the clock jumps to the next due
        task. `max_tasks` stops early (a guard against tasks that retry forever).
        """
        total = 0
        while max_tasks is None or total < max_tasks:
            done = await self.run_once()
            total += done
            if done:
                continue
            next_due = await self.backend.next_due_at()
            if next_due is None:
                break
            await self.clock.sleep_until(next_due)
        return total

    # -- the background loop --------------------------------------------------------------

    async def _main_loop(self) -> None:
        """Claim and spawn until stopped. A storage error (a locked or vanished database)
        is logged and retried after a pause: a worker must not go idle silently."""
        while not self._stopping:
            try:
                await self._loop_step()
            except Exception:
                logger.exception(
                    "worker %s: error in its main loop; retrying in %.1fs",
                    self.worker_id,
                    self.backend.poll_interval,
                )
                await self._wait_any([self._wake.ticket()], self.backend.poll_interval)

    async def _loop_step(self) -> None:
        """One turn of the main loop: claim what fits, or wait for a reason to look again."""
        free = self.concurrency - len(self._running)
        work_ticket, wake_ticket = self.backend.work_signal.ticket(), self._wake.ticket()
        if free <= 0:
            await self._wait_any([wake_ticket], None)
            return
        claimed = await self._claim(free)
        for task in claimed:
            self._spawn(task)
        if claimed:
            return
        timeout = await self._idle_timeout()
        if timeout is not None and timeout <= 0:
            return
        await self._wait_any([work_ticket, wake_ticket], timeout)

    @property
    def _virtual_time(self) -> bool:
        """True for a clock that can be moved by hand (FakeClock): time may jump."""
        return hasattr(self.clock, "advance")

    async def _idle_timeout(self) -> float | None:
        """Real seconds to wait before looking again: the next due time, or the poll."""
        next_due = await self.backend.next_due_at()
        poll = self.backend.poll_interval
        if next_due is None:
            return poll
        if self._virtual_time:
            await self.clock.sleep_until(next_due)  # virtual time: jump, do not wait
            return 0.0
        return min(poll, next_due - self.clock.now())

    @staticmethod
    async def _wait_any(tickets: list[asyncio.Event], timeout: float | None) -> None:
        waiters = [asyncio.ensure_future(t.wait()) for t in tickets]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # -- claim, run, settle ----------------------------------------------------------------

    async def _claim(self, limit: int) -> list[ClaimedTask]:
        if self._leases and self._virtual_time:
            await self._renew()  # virtual time may have jumped past our own leases
        return await self.backend.claim(self.worker_id, limit, self.clock.now(), self.lease_seconds)

    def _spawn(self, claimed: ClaimedTask) -> asyncio.Task[None]:
        self._leases[claimed.task_id] = claimed.token
        running = asyncio.create_task(self._process(claimed))
        self._running[claimed.task_id] = running
        running.add_done_callback(lambda _: self._forget(claimed.task_id))
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep_leases())
        return running

    def _forget(self, task_id: str) -> None:
        self._running.pop(task_id, None)
        self._leases.pop(task_id, None)
        self._stop_reasons.pop(task_id, None)
        self.processed += 1
        self._wake.ring()

    async def _process(self, claimed: ClaimedTask) -> None:
        """Run one claimed task end to end; never raises (errors become outcomes)."""
        try:
            await self._process_claimed(claimed)
        except asyncio.CancelledError:
            if self._stop_reasons.get(claimed.task_id) == "shutdown":
                await self._hand_back(claimed)
            elif self._stop_reasons.get(claimed.task_id) != "lost":
                raise
        except Exception:
            logger.exception("worker %s failed to process task %s", self.worker_id, claimed.task_id)

    async def _process_claimed(self, claimed: ClaimedTask) -> None:
        if claimed.lost_attempt is not None and await self._settle_lost(claimed):
            return
        try:
            call = self.serializer.decode_call(claimed.payload, task_id=claimed.task_id)
        except Exception as exc:  # corrupted, tampered or unimportable: fail, never run
            await self._finish(claimed, Outcome.failed(exc), NO_RETRY, claimed.claimed_at)
            return
        options = self._options_for(call)
        breaker = self.breakers.get(claimed.name)
        if breaker is not None and not breaker.allow():
            await self._defer(claimed, breaker)
            return
        started = self.clock.now()
        outcome = await self._run(claimed, call, options)
        if breaker is not None:
            breaker.record_success() if outcome.ok else breaker.record_failure()
        await self._finish(claimed, outcome, options.retry or self.retry, started, options)

    def _options_for(self, call: TaskCall) -> TaskOptions:
        per_call = call.options or TaskOptions()
        return per_call.merged_over(options_of(call.func))

    async def _run(self, claimed: ClaimedTask, call: TaskCall, options: TaskOptions) -> Outcome:
        context = TaskContext(
            claimed.task_id,
            claimed.name,
            claimed.attempt,
            self.worker_id,
            lambda fraction, message: self.backend.set_progress(
                claimed.task_id, claimed.token, fraction, message
            ),
            asyncio.get_running_loop(),
            started_at=self.clock.now(),
        )
        token = set_current(context)
        try:
            if options.executor == "process" and self._processes is None:
                self._processes = ProcessPoolExecutor(self._process_count)
            pool = self._processes
            outcome = await run_call(
                call,
                timeout=options.timeout,
                threads=self._threads,
                processes=pool,
                executor=options.executor,
            )
            broken = isinstance(outcome.error, BrokenProcessPool)
            if broken and pool is not None and pool is self._processes:
                self._processes = None  # a child died (os._exit, a crash): the next task
                pool.shutdown(wait=False)  # starts a new pool instead of failing too
            await context.flush_progress()  # a last report must land before the outcome
            return outcome
        except asyncio.CancelledError as exc:
            if self._stop_reasons.get(claimed.task_id) == "cancelled":
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                return Outcome.failed(exc)
            raise
        finally:
            reset_current(token)

    async def _finish(
        self,
        claimed: ClaimedTask,
        outcome: Outcome,
        policy: RetryPolicy,
        started: float,
        options: TaskOptions | None = None,
    ) -> None:
        now = self.clock.now()
        decision = self._decide(claimed, outcome.error, claimed.try_number, policy, now)
        result = None
        if outcome.ok:
            try:
                result = self.serializer.encode_value(outcome.value, task_id=claimed.task_id)
            except Exception as exc:  # an unserializable return value fails the task
                outcome, decision = Outcome.failed(exc), decide(exc, 1, NO_RETRY, now, self.rng)
        attempt = self._attempt(claimed, started, now, decision, outcome.error)
        settlement = Settlement(
            claimed.task_id,
            claimed.token,
            decision.status,
            now,
            due_at=decision.due_at,
            result=result,
            error=_message(outcome.error),
            error_type=_type_name(outcome.error),
            traceback=outcome.traceback,
            attempt=attempt,
        )
        [accepted] = await self.backend.settle([settlement])
        if not accepted:
            logger.warning(
                "task %s: lease lost before settling; outcome discarded (another "
                "worker owns it now)",
                claimed.task_id,
            )
            return
        self._report(claimed, decision, outcome)

    def _decide(
        self,
        claimed: ClaimedTask,
        error: BaseException | None,
        try_number: int,
        policy: RetryPolicy,
        now: float,
    ) -> Decision:
        """`decide`, guarded: a retry_on predicate or custom delay function that raises
        fails the task for good (logged), instead of leaving it stuck as running."""
        try:
            return decide(error, try_number, policy, now, self.rng, claimed.last_delay)
        except Exception:
            logger.exception(
                "task %s (%s): its retry policy raised while judging %r; the task fails for good",
                claimed.task_id, claimed.name, error,
            )  # fmt: skip
            return decide(error, try_number, NO_RETRY, now, self.rng)

    def _attempt(
        self,
        claimed: ClaimedTask,
        started: float,
        now: float,
        decision: Decision,
        error: BaseException | None,
    ) -> Attempt:
        return Attempt(
            claimed.task_id,
            claimed.name,
            claimed.attempt,
            self.worker_id,
            claimed.scheduled_for,
            started,
            now,
            decision.outcome,
            _type_name(error),
            _message(error),
            decision.delay,
        )

    def _report(self, claimed: ClaimedTask, decision: Decision, outcome: Outcome) -> None:
        """Log and call hooks for a stored outcome.

        Log records also carry task_id, task_name, attempt and error_type as attributes,
        so a logging handler can filter or alert on them without parsing the message.
        """
        event = TaskEvent(claimed.task_id, claimed.name, claimed.attempt, self.worker_id)
        error = outcome.error
        fields = {
            "task_id": event.task_id,
            "task_name": event.task_name,
            "attempt": event.attempt,
            "error_type": _type_name(error),
        }
        if error is None:
            logger.debug(
                "task %s (%s) succeeded on attempt %d",
                event.task_id,
                event.task_name,
                event.attempt,
                extra=fields,
            )
            call_hook(self.hooks, "on_success", event, outcome.value)
            return
        if decision.status is TaskStatus.CANCELLED:  # a choice, not a failure
            logger.info("task %s (%s) cancelled", event.task_id, event.task_name, extra=fields)
            return
        call_hook(self.hooks, "on_failure", event, error)
        if decision.retries:
            logger.warning(
                "task %s (%s) attempt %d failed: %s: %s; retrying in %.3gs",
                event.task_id,
                event.task_name,
                event.attempt,
                _type_name(error),
                error,
                decision.delay,
                extra=fields,
            )
            call_hook(self.hooks, "on_retry", event, error, decision.delay)
        elif decision.status is TaskStatus.FAILED:
            logger.error(
                "task %s (%s) failed for good after attempt %d: %s: %s",
                event.task_id,
                event.task_name,
                event.attempt,
                _type_name(error),
                error,
                extra=fields,
            )
            call_hook(self.hooks, "on_dead_letter", event, error)

    async def _settle_lost(self, claimed: ClaimedTask) -> bool:
        """Record the attempt of a worker that died holding this task; True if that ends
        the run here (the policy retries later or gives up)."""
        lost = claimed.lost_attempt
        assert lost is not None
        error = WorkerLost(f"worker {lost.worker_id} stopped renewing its lease")
        try:
            call = self.serializer.decode_call(claimed.payload, task_id=claimed.task_id)
            policy = self._options_for(call).retry or self.retry
        except Exception:
            policy = NO_RETRY
        now = self.clock.now()
        decision = self._decide(claimed, error, claimed.try_number - 1, policy, now)
        record = Attempt(
            claimed.task_id,
            claimed.name,
            claimed.attempt - 1,
            lost.worker_id,
            lost.scheduled_for,
            lost.started_at,
            claimed.scheduled_for,
            "worker_lost",
            "WorkerLost",
            str(error),
            decision.delay,
        )
        lost_run = replace(claimed, attempt=claimed.attempt - 1)  # logs and hooks name it
        if decision.retries and decision.delay == 0:
            await self.backend.append_attempt(record)  # retry at once: run it now
            self._report(lost_run, decision, Outcome(error=error))
            return False
        settlement = Settlement(
            claimed.task_id,
            claimed.token,
            decision.status,
            now,
            due_at=decision.due_at,
            error=str(error),
            error_type="WorkerLost",
            attempt=record,
            refund_attempt=True,
        )
        await self.backend.settle([settlement])
        self._report(lost_run, decision, Outcome(error=error))
        return True

    async def _defer(self, claimed: ClaimedTask, breaker: CircuitBreaker) -> None:
        """The task's circuit breaker is open: put it back until the breaker may admit it."""
        now = self.clock.now()
        due = breaker.retry_at() or now + breaker.recovery_timeout
        await self.backend.settle(
            [
                Settlement(
                    claimed.task_id,
                    claimed.token,
                    TaskStatus.SCHEDULED,
                    now,
                    due_at=max(due, now),
                    refund_attempt=True,
                )
            ]
        )
        logger.info(
            "task %s (%s) deferred: circuit breaker %s is open",
            claimed.task_id,
            claimed.name,
            breaker.name,
        )

    async def _hand_back(self, claimed: ClaimedTask) -> None:
        """Shutdown: return a running task to the queue, its attempt refunded."""
        now = self.clock.now()
        await self.backend.settle(
            [
                Settlement(
                    claimed.task_id,
                    claimed.token,
                    TaskStatus.QUEUED,
                    now,
                    due_at=now,
                    refund_attempt=True,
                )
            ]
        )
        logger.info("task %s handed back to the queue at shutdown", claimed.task_id)

    # -- leases ---------------------------------------------------------------------------

    async def _keep_leases(self) -> None:
        """Heartbeat: renew our leases every lease_seconds/3 while tasks run."""
        while self._leases:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self._renew()
            except Exception:  # keep beating: one failed renewal must not end the heartbeat
                logger.exception("worker %s: lease renewal failed; retrying", self.worker_id)

    async def _renew(self) -> None:
        leases = list(self._leases.items())
        lost = await self.backend.renew_leases(leases, self.clock.now(), self.lease_seconds)
        for task_id in lost:
            running = self._running.get(task_id)
            if running is None:
                continue
            info = await self.backend.get_tasks([task_id])
            cancelled = task_id in info and info[task_id].status is TaskStatus.RUNNING
            self._stop_reasons[task_id] = "cancelled" if cancelled else "lost"
            running.cancel()


def _type_name(error: BaseException | None) -> str | None:
    return None if error is None else type(error).__name__


def _message(error: BaseException | None) -> str | None:
    return None if error is None else str(error)

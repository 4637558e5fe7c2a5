"""One claimed task, end to end: decode, check the breaker, run, judge, settle, report.

`TaskRunner.process` never raises for anything a task does: every ending (success, error,
time limit, cancel, lost lease, shutdown) becomes a decision from `sitq.policy.state`, stored
through the one settle path (`sitq.engine.settling`), then logged and passed to the hooks.

Wherever the worker touches an object the task supplied (its payload, its result, its
exception, a retry predicate), it catches BaseException, not Exception: a result whose
pickling raises SystemExit, or an exception whose __str__ does, fails that task with an
error that says so, and the worker and the task's neighbours go on.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

from sitq.backends.base import Backend, ClaimedTask, Settlement
from sitq.clock import Clock
from sitq.engine import reporting
from sitq.engine.context import TaskContext, reset_current, set_current
from sitq.engine.execution import Outcome, run_call, text_of, traceback_of
from sitq.engine.hooks import WorkerHooks
from sitq.engine.leases import CANCELLED
from sitq.engine.pipelines import parent_results
from sitq.engine.pools import ProcessPool
from sitq.engine.rate_gate import RateGate
from sitq.engine.settling import Settler
from sitq.errors import SerializationError
from sitq.options import NO_OPTIONS, TaskOptions
from sitq.policy import state
from sitq.policy.breaker import CircuitBreaker
from sitq.policy.retry import NO_RETRY, RetryPolicy, WorkerLost
from sitq.task import Attempt, TaskStatus
from sitq.wire.serialization import Serializer, TaskCall

logger: logging.Logger = logging.getLogger("sitq.worker")
SHUTDOWN = "shutdown"  # a stop reason beside leases.CANCELLED and leases.LOST
UNSTARTED = "unstarted"  # claimed ahead, going back to the queue before it started


@dataclass
class TaskRunner:
    """Everything needed to run one claimed task; shared by all of a worker's tasks."""

    worker_id: str
    backend: Backend
    serializer: Serializer
    settler: Settler
    clock: Clock
    rng: random.Random
    retry: RetryPolicy
    hooks: WorkerHooks
    breakers: Mapping[str, CircuitBreaker]
    threads: Executor
    process_count: int | None = None
    stop_reasons: dict[str, str] = field(default_factory=dict)  # task id -> why cancelled
    processes: ProcessPool | None = None
    #: Called when a task has run and its outcome goes to be stored: its slot is free.
    ran: Callable[[str], None] = lambda task_id: None
    #: Rate limits by task name (`sitq.engine.rate_gate`); None: the worker sets up none.
    rate_gate: RateGate | None = None

    async def process(self, claimed: ClaimedTask) -> None:
        """Run one claimed task end to end; never raises (errors become outcomes)."""
        try:
            await self._process(claimed)
        except asyncio.CancelledError:
            reason = self.stop_reasons.get(claimed.task_id)
            if reason == SHUTDOWN:
                await self.hand_back(claimed)
            elif reason is None:
                raise
        except KeyboardInterrupt:
            raise  # a real Ctrl-C on the loop's thread, in the worker's own code: stop
        except BaseException as exc:  # even SystemExit from a task's object: never fatal
            logger.error(
                "worker %s failed to process task %s:\n%s",
                self.worker_id,
                claimed.task_id,
                traceback_of(exc),
            )

    async def _process(self, claimed: ClaimedTask) -> None:
        if self.stop_reasons.get(claimed.task_id) == CANCELLED:  # before it ever started
            cancelled = Outcome.failed(asyncio.CancelledError())
            await self._finish(claimed, cancelled, NO_RETRY, self.clock.now())
            return
        if self.stop_reasons.get(claimed.task_id) == UNSTARTED:
            await self._store(claimed, state.return_unstarted(), self.clock.now())
            logger.info("task %s, claimed ahead, went back to the queue unstarted", claimed.task_id)
            return
        try:
            call = self.serializer.decode_call(claimed.payload, task_id=claimed.task_id)
        except BaseException as exc:  # corrupted, tampered, unimportable: fail, never run
            if claimed.lost_attempt is None or not await self._after_lost(claimed, NO_RETRY):
                await self._finish(claimed, Outcome.failed(exc), NO_RETRY, claimed.claimed_at)
            return
        options = call.options or NO_OPTIONS
        policy = options.retry or self.retry
        if claimed.lost_attempt is not None and await self._after_lost(claimed, policy):
            return
        if self.rate_gate is not None and not await self.rate_gate.admits(claimed, options):
            return  # its rate limit is reached: it waits for room, no attempt used
        breaker = self.breakers.get(claimed.name)
        if breaker is not None and not breaker.allow():
            await self._defer(claimed, breaker)
            return
        started = self.clock.now()
        reporting.started(claimed)
        outcome = await self._run(claimed, call, options)
        if breaker is not None:
            breaker.record_success() if outcome.ok else breaker.record_failure()
        await self._finish(claimed, outcome, policy, started)

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
            _parents=lambda: parent_results(self.backend, self.serializer, claimed.task_id),
        )
        token = set_current(context)
        try:
            if options.executor == "process" and self.processes is None:
                self.processes = ProcessPool(self.process_count)
            pool = self.processes
            outcome = await self._call(call, options, pool)
            if outcome.pool_broken:
                if pool is not None and pool is self.processes:
                    self.processes = None  # a child died (os._exit, a crash): the next task
                    pool.kill()  # starts a new pool instead of failing too
                outcome = await self._run_alone(call, options)
            await context.flush_progress()  # a last report must land before the outcome
            return outcome
        except asyncio.CancelledError as exc:
            if self.stop_reasons.get(claimed.task_id) == CANCELLED:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                return Outcome.failed(exc)
            raise
        finally:
            reset_current(token)

    async def _call(
        self, call: TaskCall, options: TaskOptions, pool: ProcessPool | None
    ) -> Outcome:
        return await run_call(
            call,
            timeout=options.timeout,
            threads=self.threads,
            processes=pool,
            executor=options.executor,
        )

    async def _run_alone(self, call: TaskCall, options: TaskOptions) -> Outcome:
        """A pool process died, and every call in that pool failed with it: the one that
        killed it and its neighbours alike. Run this call once more in a process of its own:
        a neighbour now succeeds, and the culprit fails alone, with BrokenProcessPool."""
        pool = ProcessPool(1)
        try:
            return await self._call(call, options, pool)
        finally:
            pool.kill()

    def _judge(
        self, claimed: ClaimedTask, error: BaseException | None, policy: RetryPolicy, now: float
    ) -> state.Decision:
        """`state.after_attempt`, guarded: a retry policy that raises while judging (a buggy
        predicate) fails the task for good, logged, instead of leaving it running."""
        try:
            return state.after_attempt(
                error, claimed.try_number, policy, now, self.rng, claimed.last_delay
            )
        except BaseException as exc:  # even SystemExit from a predicate: the task's doing
            logger.error(
                "task %s (%s): its retry policy raised while judging %s; the task fails for "
                "good:\n%s",
                claimed.task_id,
                claimed.name,
                reporting.type_name(error),
                traceback_of(exc),
            )
            return state.after_attempt(error, claimed.try_number, NO_RETRY, now, self.rng)

    async def _finish(
        self, claimed: ClaimedTask, outcome: Outcome, policy: RetryPolicy, started: float
    ) -> None:
        now = self.clock.now()
        decision = self._judge(claimed, outcome.error, policy, now)
        result = None
        if outcome.ok:
            try:
                result = self.serializer.encode_value(outcome.value, task_id=claimed.task_id)
            except BaseException as exc:  # an unserializable return value fails the task
                outcome = Outcome.failed(unsendable(claimed, exc))
                decision = state.unsendable_result()
        error = outcome.error
        record = Attempt(
            claimed.task_id,
            claimed.name,
            claimed.attempt,
            self.worker_id,
            claimed.scheduled_for,
            started,
            now,
            decision.outcome or "failed",
            reporting.type_name(error),
            reporting.message(error),
            decision.delay,
        )
        settlement = Settlement(
            claimed.task_id,
            claimed.token,
            decision.status,
            now,
            due_at=decision.due_at,
            result=result,
            error=reporting.message(error),
            error_type=reporting.type_name(error),
            traceback=outcome.traceback,
            attempt=record,
        )
        self.ran(claimed.task_id)
        if not await self.settler.settle(settlement):
            logger.warning(
                "task %s: lease lost before settling; outcome discarded (another "
                "worker owns it now)",
                claimed.task_id,
            )
            return
        reporting.finished(
            claimed, self.worker_id, self.hooks, decision, error, outcome.value, now - started
        )

    async def _after_lost(self, claimed: ClaimedTask, policy: RetryPolicy) -> bool:
        """The previous worker died holding this task (its lost attempt is already in the
        history). True if that ends the run here; False to run the task now."""
        now = self.clock.now()

        def judged_by(chosen: RetryPolicy) -> state.Decision:
            return state.after_lost_lease(
                claimed.try_number - 1,
                chosen,
                now,
                self.rng,
                cancel_requested=claimed.cancel_requested,
                previous_delay=claimed.last_delay,
            )

        try:
            decision = judged_by(policy)
        except BaseException:  # a policy that raises while judging: the task fails, never sticks
            decision = judged_by(NO_RETRY)
        assert claimed.lost_attempt is not None
        error = WorkerLost(f"worker {claimed.lost_attempt.worker_id} stopped renewing its lease")
        lost_run = claimed.attempt - 1
        if decision.runs_now:
            reporting.finished(
                claimed, self.worker_id, self.hooks, decision, error, attempt=lost_run
            )
            return False
        cancelled = decision.status is TaskStatus.CANCELLED
        settlement = Settlement(
            claimed.task_id,
            claimed.token,
            decision.status,
            now,
            due_at=decision.due_at,
            error="cancelled; its worker was lost before it stopped" if cancelled else str(error),
            error_type="Cancelled" if cancelled else "WorkerLost",
            refund_attempt=decision.refund,
        )
        if await self.settler.settle(settlement):
            reporting.finished(
                claimed, self.worker_id, self.hooks, decision, error, attempt=lost_run
            )
        return True

    def report_decided(self, claimed: list[ClaimedTask]) -> list[ClaimedTask]:
        """Log and pass to the hooks the lost leases the claim itself ended (their budget
        was spent: `state.LOST_WHEN_SPENT`); return the tasks left to run."""
        to_run = []
        for task in claimed:
            if task.decided is None:
                to_run.append(task)
                continue
            lost_by = task.lost_attempt.worker_id if task.lost_attempt else "?"
            error = WorkerLost(f"worker {lost_by} stopped renewing its lease")
            reporting.finished(task, self.worker_id, self.hooks, state.Decision(task.decided),
                               error)  # fmt: skip
        return to_run

    async def _defer(self, claimed: ClaimedTask, breaker: CircuitBreaker) -> None:
        """The task's circuit breaker is open: put it back until the breaker may admit it."""
        now = self.clock.now()
        decision = state.deferral(breaker.retry_at(), breaker.recovery_timeout, now)
        await self._store(claimed, decision, now)
        logger.info(
            "task %s (%s) deferred: circuit breaker %s is open",
            claimed.task_id,
            claimed.name,
            breaker.name,
        )

    async def hand_back(self, claimed: ClaimedTask) -> None:
        """Shutdown: return a running (or claimed, not started) task to the queue, its
        attempt refunded."""
        now = self.clock.now()
        await self._store(claimed, state.hand_back(now), now)
        logger.info("task %s handed back to the queue at shutdown", claimed.task_id)

    async def close(self) -> None:
        """Store the outcomes still on their way, then let the pools go: threads end with
        their last task (a stopping worker does not wait for them), processes at once (the
        tasks they ran were handed back, and the interpreter would wait for them at exit)."""
        await self.settler.drain()
        self.threads.shutdown(wait=False)
        if self.processes is not None:
            self.processes.kill()

    async def _store(self, claimed: ClaimedTask, decision: state.Decision, now: float) -> bool:
        return await self.settler.settle(
            Settlement(
                claimed.task_id,
                claimed.token,
                decision.status,
                now,
                due_at=decision.due_at,
                refund_attempt=decision.refund,
            )
        )


def unsendable(claimed: ClaimedTask, error: BaseException) -> BaseException:
    """The error for a result the serializer could not encode. The serializer's own
    SerializationError says what and why; anything else (a __reduce__ that raises
    SystemExit) is named for what it is, so the task's record shows what failed."""
    if isinstance(error, Exception):
        return error
    unsent = SerializationError(
        f"the result of {claimed.name} could not be serialized: pickling raised "
        f"{type(error).__name__}: {text_of(error)}"
    )
    unsent.__cause__ = error  # its traceback shows where pickling raised
    return unsent

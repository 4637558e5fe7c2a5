"""Run one claimed task: decode its call, run it where it belongs under its time limit, and
ask `sitq.policy.state` what comes next. The worker (`sitq.engine.worker`) calls these steps
in order, stores what they decided, then has them reported:

    prepare(task, now)          the call to run, or an ending decided without running it
                                (a lost lease, a full rate-limit window, an open breaker)
    call(task, prepared)        run it: an Outcome (a value, or an error), never a raise
    decide(task, outcome, ...)  state decides; the Ending says what to store
    report(ending)              once stored: log it, call the hooks

Words used for an attempt, here and in the records: `attempt` is an attempt's number in the
task's history (1, 2, ...: every attempt it ever had, requeues included); `tries` is how
many attempts count against its retry budget (those since the last requeue, this one
included); `attempts` (on Result and TaskInfo) is how many it had in all. A task's `name` is
what it is known by: its `name` option, else its function's qualified name (the public
records say `task_name`, and log records must, since `LogRecord.name` is the logger's).

Whatever a task does, even `raise SystemExit`, comes back as an `Outcome`: a task can fail,
but it cannot take the worker down with it. That holds for the objects it hands back too
(its result, its exception, a retry predicate): the worker catches BaseException around
them, so a result whose pickling raises SystemExit fails that task with an error that says
so, and its neighbours go on. Async functions run on the worker's event loop, plain ones in
a thread (or a process: `sitq.engine.pools`), so they never block it. `current_task()` tells
a task which one it is, through a context variable the worker sets around the call.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from sitq.backends.base import Backend, ClaimedTask, Settlement
from sitq.clock import Clock
from sitq.engine import reporting
from sitq.engine.context import TaskContext, current_task_var, flush
from sitq.engine.dependencies import parent_results
from sitq.engine.hooks import WorkerHooks
from sitq.engine.pools import Processes, run_in_thread
from sitq.engine.rate_gate import RateGate
from sitq.errors import text_of, traceback_of, unsendable
from sitq.options import NO_OPTIONS, TaskOptions
from sitq.policy import state
from sitq.policy.breaker import CircuitBreaker
from sitq.policy.retry import NO_RETRY, RetryPolicy, TaskTimeout, WorkerLost
from sitq.task import Attempt, TaskStatus
from sitq.wire.serialization import Serializer, TaskCall

logger: logging.Logger = logging.getLogger("sitq.worker")


@dataclass(frozen=True)
class Outcome:
    """What one attempt produced: a value, or an error with its traceback."""

    value: Any = None
    error: BaseException | None = None
    traceback: str | None = None

    @classmethod
    def failed(cls, error: BaseException) -> Outcome:
        return cls(error=error, traceback=traceback_of(error))


@dataclass(slots=True)
class Prepared:
    """A task ready to run: its decoded call, its options, what judges its outcome, and
    when it starts."""

    call: TaskCall
    options: TaskOptions
    policy: RetryPolicy
    breaker: CircuitBreaker | None
    started: float


@dataclass(slots=True)
class Ending:
    """How a claimed task's turn ends: what to store, then what to tell once it is stored.
    `attempt` is the attempt to name when it is not the claim's own (a lost one); `note`
    is logged instead of the usual report (a deferral, a wait for a rate-limit slot, a task
    going back unstarted). `news`: something to tell once it is stored (False for a
    success nobody listens to)."""

    task: ClaimedTask
    settlement: Settlement
    decision: state.Decision
    error: BaseException | None = None
    value: object = None
    duration: float | None = None
    attempt: int | None = None
    note: str | None = None
    news: bool = True


@dataclass
class TaskRunner:
    """Everything needed to run a claimed task; shared by all of a worker's tasks."""

    worker_id: str
    backend: Backend
    serializer: Serializer
    clock: Clock
    rng: random.Random
    retry: RetryPolicy
    hooks: WorkerHooks
    breakers: Mapping[str, CircuitBreaker]
    threads: Executor
    processes: Processes
    rate_gate: RateGate  # the rate limits (`sitq.engine.rate_gate`)

    def __post_init__(self) -> None:
        # A success is reported only if someone listens: an `on_success` hook other than
        # WorkerHooks' no-op (overridden, or set on the object), or an INFO log (`decide`).
        hooks = self.hooks
        overridden = type(hooks).on_success is not WorkerHooks.on_success
        self._tells_success = overridden or "on_success" in getattr(hooks, "__dict__", {})

    async def prepare(self, task: ClaimedTask, now: float) -> Prepared | Ending:
        """Decode the call; judge a lost lease the claim took over; take a start under the
        task's rate limit, if it has one; ask the breaker. What runs starts now, or, if its
        rate limit was asked (a trip to the database), once its slot is taken."""
        try:
            call = self.serializer.decode_call(task.payload, task_id=task.task_id)
        except BaseException as exc:  # corrupted, tampered, unimportable: fail, never run
            lost = self._after_lost(task, NO_RETRY, now) if task.lost_attempt else None
            return lost or self.decide(task, Outcome.failed(exc), NO_RETRY, task.claimed_at)
        options = call.options or NO_OPTIONS
        policy = options.retry or self.retry
        if task.lost_attempt is not None and (lost := self._after_lost(task, policy, now)):
            return lost
        # A task with a rate limit takes a start first (before the breaker: no probe spent);
        # one without never enters the gate.
        if options.rate_limit is not None or task.name in self.rate_gate.limits:
            away = await self.rate_gate.turned_away(task, options)
            if away is not None:  # no room now: it waits for its slot, no attempt used
                return self._ending(task, away.decision, away.now, away.note)
            now = self.clock.now()
        breaker = self.breakers.get(task.name) if self.breakers else None
        if breaker is not None and not breaker.allow():
            decision = state.deferral(breaker.retry_at(), breaker.recovery_timeout, now)
            note = f"task {task.task_id} ({task.name}) deferred: circuit breaker {breaker.name}"
            note += " is open"
            return self._ending(task, decision, now, note)
        return Prepared(call=call, options=options, policy=policy, breaker=breaker, started=now)

    async def call(self, task: ClaimedTask, prepared: Prepared) -> Outcome:
        """Run the call with `current_task()` set to this task. A cancel of the worker's
        asyncio task (a cancel request, a lost lease, shutdown) is the worker's to handle."""
        if logger.isEnabledFor(logging.INFO):  # else build no record that nobody reads
            reporting.started(task)
        pending: set[Any] = set()  # its progress writes on their way (`context.report`)
        # What `current_task()` makes when the task asks: most tasks never do.
        make_context = functools.partial(
            TaskContext,
            task_id=task.task_id,
            task_name=task.name,
            attempt=task.attempt,
            worker_id=self.worker_id,
            _report=functools.partial(self.backend.set_progress, task.task_id, task.token),
            _loop=asyncio.get_running_loop(),
            started_at=prepared.started,
            _pending=pending,
            _parents=lambda: parent_results(self.backend, self.serializer, task.task_id),
        )
        reset = current_task_var.set(make_context)
        try:
            outcome = await self._run(prepared.call, prepared.options)
            if pending:
                await flush(pending)  # a last report must land before the outcome
            return outcome
        finally:
            current_task_var.reset(reset)

    def decide(
        self,
        task: ClaimedTask,
        outcome: Outcome,
        policy: RetryPolicy,
        started: float,
        breaker: CircuitBreaker | None = None,
    ) -> Ending:
        """Let `state.after_attempt` judge the outcome, and build what to store."""
        if breaker is not None:
            breaker.record_success() if outcome.error is None else breaker.record_failure()
        now = self.clock.now()
        decision = self._judge(task, outcome.error, policy, now)
        result = None
        if outcome.error is None:
            try:
                result = self.serializer.encode_value(outcome.value, task_id=task.task_id)
            except BaseException as exc:  # an unserializable return value fails the task
                outcome = Outcome.failed(unsendable(task.name, exc))
                decision = state.unsendable_result()
        error = outcome.error
        error_type = error_text = None
        if error is not None:
            error_type, error_text = type(error).__name__, text_of(error)
        record = Attempt(
            task_id=task.task_id,
            task_name=task.name,
            attempt=task.attempt,
            worker_id=self.worker_id,
            scheduled_for=task.scheduled_for,
            started_at=started,
            finished_at=now,
            outcome=decision.outcome or "failed",
            error_type=error_type,
            error_message=error_text,
            next_delay=decision.delay,
        )
        settlement = Settlement(
            task_id=task.task_id,
            token=task.token,
            status=decision.status,
            now=now,
            due_at=decision.due_at,
            result=result,
            error=error_text,
            error_type=error_type,
            traceback=outcome.traceback,
            attempt=record,
        )
        news = error is not None or self._tells_success or logger.isEnabledFor(logging.INFO)
        return Ending(task=task, settlement=settlement, decision=decision, error=error,
                      value=outcome.value, duration=now - started, news=news)  # fmt: skip

    def unstarted(self, task: ClaimedTask, cancelled: bool) -> Ending:
        """A task leaving before it ever started: cancelled (settled as a cancelled attempt),
        or claimed ahead and going back to the queue in its place (`state.return_unstarted`)."""
        now = self.clock.now()
        if cancelled:
            return self.decide(task, Outcome.failed(asyncio.CancelledError()), NO_RETRY, now)
        note = f"task {task.task_id}, claimed ahead, went back to the queue unstarted"
        return self._ending(task, state.return_unstarted(), now, note)

    def handed_back(self, task: ClaimedTask) -> Ending:
        """Shutdown: back to the queue (running, or claimed and not started), attempt refunded."""
        now = self.clock.now()
        note = f"task {task.task_id} handed back to the queue at shutdown"
        return self._ending(task, state.hand_back(now), now, note)

    def report(self, ending: Ending) -> None:
        """The ending is stored: log it and call the hooks (`sitq.engine.reporting`)."""
        if ending.note is not None:
            logger.info(ending.note)
        else:
            reporting.finished(ending.task, self.worker_id, self.hooks, ending.decision,
                               ending.error, ending.value, ending.duration,
                               ending.attempt)  # fmt: skip

    def report_decided(self, task: ClaimedTask) -> None:
        """A lost lease the claim itself ended (its budget was spent: `state.LOST_WHEN_SPENT`):
        nothing to run or store, only to report."""
        reporting.decided(task, self.worker_id, self.hooks)

    def close(self) -> None:
        """Let the pools go: threads end with their last task (a stopping worker does not
        wait for them), processes at once (the tasks they ran were handed back, and the
        interpreter would wait for them at exit)."""
        self.threads.shutdown(wait=False)
        self.processes.kill()

    # -- the steps' parts -------------------------------------------------------------------

    def _ending(self, task: ClaimedTask, decision: state.Decision, now: float, note: str) -> Ending:
        """An ending with no attempt to record: only the task's next state."""
        settlement = Settlement(task_id=task.task_id, token=task.token, status=decision.status,
                                now=now, due_at=decision.due_at,
                                refund_attempt=decision.refund)  # fmt: skip
        return Ending(task=task, settlement=settlement, decision=decision, note=note)

    def _judge(
        self, task: ClaimedTask, error: BaseException | None, policy: RetryPolicy, now: float
    ) -> state.Decision:
        """`state.after_attempt`, guarded: a retry policy that raises while judging (a buggy
        predicate) fails the task for good, logged, instead of leaving it running."""
        try:
            return state.after_attempt(error, task.tries, policy, now, self.rng, task.last_delay)
        except BaseException as exc:  # even SystemExit from a predicate: the task's doing
            logger.error(
                "task %s (%s): its retry policy raised while judging %s; the task fails for "
                "good:\n%s",
                task.task_id,
                task.name,
                reporting.type_name(error),
                traceback_of(exc),
            )
            return state.after_attempt(error, task.tries, NO_RETRY, now, self.rng)

    def _after_lost(self, task: ClaimedTask, policy: RetryPolicy, now: float) -> Ending | None:
        """The previous worker died holding this task (its lost attempt is already in the
        history, as tries - 1): the ending that decides, or None to run the task now."""

        def judged_by(chosen: RetryPolicy) -> state.Decision:
            return state.after_lost_lease(task.tries - 1, chosen, now, self.rng,
                                          cancel_requested=task.cancel_requested,
                                          previous_delay=task.last_delay)  # fmt: skip

        try:
            decision = judged_by(policy)
        except BaseException:  # a policy that raises while judging: the task fails, never sticks
            decision = judged_by(NO_RETRY)
        assert task.lost_attempt is not None
        error = WorkerLost(f"worker {task.lost_attempt.worker_id} stopped renewing its lease")
        lost_run = task.attempt - 1
        if decision.runs_now:
            reporting.finished(task, self.worker_id, self.hooks, decision, error, attempt=lost_run)
            return None
        cancelled = decision.status is TaskStatus.CANCELLED
        settlement = Settlement(
            task_id=task.task_id,
            token=task.token,
            status=decision.status,
            now=now,
            due_at=decision.due_at,
            error=state.LOST_CANCEL_MESSAGE if cancelled else str(error),
            error_type="Cancelled" if cancelled else "WorkerLost",
            refund_attempt=decision.refund,
        )
        return Ending(task=task, settlement=settlement, decision=decision, error=error,
                      attempt=lost_run)  # fmt: skip

    async def _run(self, call: TaskCall, options: TaskOptions) -> Outcome:
        """Run `call` where it belongs; a time limit becomes a `TaskTimeout` error."""
        if options.executor == "async" or is_async(call.func):
            work = _run_async(call)
        else:
            work = self._run_plain(call, options.executor)
        if options.timeout is None:
            return await work
        try:
            return await asyncio.wait_for(work, options.timeout)
        except TimeoutError:
            kind = "cancelled" if is_async(call.func) else "abandoned (a thread cannot be stopped)"
            limit = f"task exceeded its time limit of {options.timeout:g}s and was {kind}"
            return Outcome.failed(TaskTimeout(options.timeout, limit))

    async def _run_plain(self, call: TaskCall, executor: str | None) -> Outcome:
        """A plain function: in a thread, or in a pool process (`executor="process"`)."""
        if executor == "process":
            value, error, traceback = await self.processes.run(call)
        else:
            value, error, traceback = await run_in_thread(call, self.threads)
        return Outcome(value=value, error=error, traceback=traceback)


def is_async(func: Any) -> bool:
    """True for `async def` functions (also behind functools.partial or a callable object)."""
    code = getattr(func, "__code__", None)
    if code is not None and code.co_flags & inspect.CO_COROUTINE:
        return True  # a plain `async def` function, the usual case: nothing to unwrap
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - a callable object's async __call__
    )


async def _run_async(call: TaskCall) -> Outcome:
    """Await the task inside this coroutine, so even SystemExit is caught here."""
    try:
        value = call.func(*call.args, **call.kwargs)
        if inspect.isawaitable(value):
            value = await value
        return Outcome(value=value)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # a task's SystemExit/KeyboardInterrupt must not kill us
        return Outcome.failed(exc)

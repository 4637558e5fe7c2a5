"""A model-based test: hypothesis drives sitq's public API at random and checks every step.

**The model.** `ModelTask` is what we *expect* of each task, worked out in plain Python:
its status, when it is due, how many attempts it has had, which attempt outcomes its
history should hold, how often it has really run, and whether a dead worker holds it.
`QueueModel` is a hypothesis `RuleBasedStateMachine`. Each example gets a fresh SQLite
file in a temp dir, a `FakeClock`, a queue, a live worker and its own event loop; then
hypothesis picks a sequence of rules, each doing one thing through the public API and
updating the model to match:

- enqueue a task that succeeds, fails N times then succeeds, or always fails; with no
  retry policy (the default: one attempt), `RetryPolicy.fixed` or `.exponential`; due now
  or later (`with_options(delay=...)`);
- run one worker step (`worker.run_once()`), or advance the clock;
- a worker that claims and dies: `backend.claim(...)` under a made-up worker id, and
  never a report (advancing past its lease lets the live worker take the task over);
- cancel, requeue, purge the dead letters, `get_result(timeout=0)`;
- enqueue with a unique key (`with_options(unique_key=...)`, always the same key): while an
  unfinished task holds the key, the enqueue returns its id and adds nothing; a requeue
  of a task whose key another unfinished task holds is refused (UniqueKeyTakenError).
- declare a periodic task (`queue.schedule(every=..., missed=...)`): each worker step
  then enqueues the tick the model's own arithmetic expects, once, and runs it.
- enqueue a task after one or two earlier tasks (`with_options(after=[...])`): the model
  decides its fate by its own reading of the rule (a gone, failed or cancelled parent
  cancels it; an unfinished one keeps it blocked; else it waits), again after every step,
  in enqueue order (a parent is always older than its child).

**The invariants**, checked after every step, and what each one protects:

- *each task is in exactly one state, the one the model expects* (and its attempt
  count): the engine's state machine has no leaks or surprise transitions;
- *attempts stay within the retry budget*: a policy's `max_attempts` is a promise (one
  attempt without a policy; `requeue` starts a fresh budget), at every moment: a claim
  that finds an expired lease whose lost attempt spent the budget ends the task in its
  own transaction, so even a worker that dies right after that claim overdraws nothing;
- *a finished task never runs again*: the executions the tasks logged themselves match
  the model (at-least-once must not become "again after success");
- *dead letters are exactly the failed tasks*: `dead_letters()` hides none, invents none;
- *at most one unfinished task per unique key*, whatever the rules did;
- *every attempt, lost ones included, is in the history*, numbered 1..n without gaps
  and with the expected outcomes: analysis and plots read that history;
- *no attempt starts before it is due*: neither before its scheduled time, nor before
  the previous attempt's end plus the delay it asked for;
- *no child starts before all its parents succeeded*, and no child is left blocked
  behind a finished parent (the first invariant, with the model's verdicts).

Where two answers are both right, the model accepts both and says so: a cancel asked of
a task a dead worker holds may show at once or at the takeover, and that lost attempt may
be recorded as "worker_lost" or "cancelled".

Reading a failure: hypothesis prints the shortest sequence of steps it found
(`state.enqueue(...)`, `state.a_worker_claims_and_dies(limit=1)`, ...) under the
assertion that broke; `derandomize` makes it the same on every run and machine.

Two example tests at the end pin down crash cases found by adversarial testing (issue 9,
item 5): a cancel that must survive the death of the task's worker, and two workers
dying in a row, whose lost attempts must both be in the history.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from backends import Database, discard, make_database, postgres_unavailable
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from model_tasks import EXECUTIONS, fail_then_succeed

from sitq import (
    Attempt,
    FakeClock,
    Result,
    RetryPolicy,
    TaskInfo,
    TaskNotFoundError,
    TaskQueue,
    TaskStateError,
    TaskStatus,
    UniqueKeyTakenError,
    Worker,
)
from sitq.policy import state

LEASE = 4.0  # seconds a dying worker's claim lasts before the live worker may take over
ALWAYS = 10**9  # "fail this many times first": a task that never succeeds
MAX_TASKS = 8  # per example: enough to interleave, few enough to stay fast
WAITING = frozenset({TaskStatus.QUEUED, TaskStatus.SCHEDULED, TaskStatus.RETRYING})
PARENT_FAILED = "ParentFailed"  # the error type of a child cancelled for its parent
FINISHED = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})
WORKER_LOST = frozenset({"worker_lost"})
# A task cancelled while a dead worker held it: its lost attempt may be recorded either way.
LOST_OR_CANCELLED = frozenset({"worker_lost", "cancelled"})


@dataclass(frozen=True)
class Policy:
    """A retry policy the model reasons about with its own arithmetic, not sitq's."""

    kind: str  # "none" (sitq's default: one attempt), "fixed" or "exponential"
    base: float = 0.0
    max_attempts: int = 1

    def build(self) -> RetryPolicy | None:
        if self.kind == "fixed":
            return RetryPolicy.fixed(self.base, max_attempts=self.max_attempts)
        if self.kind == "exponential":
            return RetryPolicy.exponential(self.base, max_attempts=self.max_attempts)
        return None

    def delay_after(self, tries: int) -> float | None:
        """Seconds before the next try after `tries` failed tries; None: give up."""
        if tries >= self.max_attempts:
            return None
        if self.kind == "exponential":
            return self.base * 2 ** (tries - 1)
        return self.base


POLICIES = st.one_of(
    st.just(Policy("none")),
    st.builds(Policy, st.just("fixed"), st.sampled_from([0.0, 2.0]), st.integers(1, 4)),
    st.builds(Policy, st.just("exponential"), st.sampled_from([1.0, 3.0]), st.integers(2, 4)),
)


@dataclass
class ModelTask:
    """What one task should look like, according to the model."""

    task_id: str
    failures: int  # executions that fail before one succeeds
    policy: Policy
    status: TaskStatus
    due_at: float
    attempts: int = 0  # every attempt ever, lost ones included
    cycle_base: int = 0  # attempts before the last requeue: the budget counts from here
    requeued_after: set[int] = field(default_factory=set)  # attempt numbers before requeues
    executions: int = 0  # real runs of the function
    outcomes: list[frozenset[str]] = field(default_factory=list)  # settled attempts
    lost: list[int] = field(default_factory=list)  # attempts held by dead workers
    lease_until: float | None = None
    cancel_requested: bool = False
    error_type: str | None = None
    purged: bool = False
    unique_key: str | None = None
    parents: tuple[str, ...] = ()  # `after=`: the tasks it waits for, in order

    @property
    def tries(self) -> int:
        """Attempts in the current requeue cycle: what the budget is measured against."""
        return self.attempts - self.cycle_base

    def holds_key(self) -> bool | None:
        """Does it hold its unique key now? None: the model cannot say (a cancel asked of
        a dead worker's task may have ended it already, or not yet)."""
        if self.unique_key is None or self.purged:
            return False
        if self.cancel_requested:
            return None
        return self.status not in FINISHED

    def possible_statuses(self) -> frozenset[TaskStatus]:
        """A cancel asked of a dead worker's task may show at once or at the takeover."""
        if self.cancel_requested:
            return frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED})
        return frozenset({self.status})

    def expected_history(self) -> list[frozenset[str]]:
        """Outcomes of all its attempts, settled ones first, then those lost so far."""
        pending = LOST_OR_CANCELLED if self.cancel_requested else WORKER_LOST
        return self.outcomes + [pending] * len(self.lost)

    def finish(self, status: TaskStatus, error_type: str | None = None) -> None:
        self.status, self.error_type = status, error_type
        self.lease_until, self.cancel_requested = None, False

    def requeued(self, now: float) -> None:
        self.status, self.due_at, self.error_type = TaskStatus.QUEUED, now, None
        self.cycle_base = self.attempts
        self.requeued_after.add(self.attempts)


@dataclass
class ModelSchedule:
    """A periodic task as the model expects it: its next tick, moved on by worker steps."""

    every: float
    missed: str  # "last": the latest due tick runs; "skip": only one found on time
    failures: int  # each tick's task fails this many executions first
    next_at: float

    def tick(self, now: float) -> float | None:
        """The tick a worker step at `now` enqueues (None: none), moving `next_at` on."""
        if self.next_at > now:
            return None
        latest = self.next_at + math.floor((now - self.next_at) / self.every) * self.every
        self.next_at = latest + self.every
        if self.missed == "skip" and now - latest > self.every / 2:
            return None
        return latest


@dataclass
class Snapshot:
    """Everything the invariants read, fetched once per step through the public API."""

    rows: list[TaskInfo]
    counts: dict[TaskStatus, int]
    history: dict[str, list[Attempt]]
    dead: list[Result]


class QueueModel(RuleBasedStateMachine):
    """sitq against the model: one fresh database, clock, queue and worker per example."""

    KIND = "sqlite"  # the backend; PostgresQueueModel below runs the same model on PostgreSQL

    def __init__(self) -> None:
        super().__init__()
        EXECUTIONS.clear()
        self.loop = asyncio.new_event_loop()  # the state machine is sync: drive it by hand
        self.tmp = tempfile.mkdtemp(prefix="sitq-model-")
        self.clock = FakeClock()
        self.store = make_database(self.KIND, Path(self.tmp))
        self.backend = self.store.backend()
        self.queue = TaskQueue(self.backend, clock=self.clock)
        self.worker = Worker(
            self.backend, clock=self.clock, worker_id="live", rng=random.Random(0), concurrency=64
        )
        self.tasks: dict[str, ModelTask] = {}  # in enqueue order, purged ones included
        self.dead_workers = 0
        self.periodic: ModelSchedule | None = None
        self._snapshot: Snapshot | None = None
        self.act(self.queue.connect())

    def teardown(self) -> None:
        try:
            self.act(self.worker.stop())
            self.act(self.queue.close())
            self.act(discard(self.store))
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------

    def act(self, coroutine: Any) -> Any:
        """Run one call against sitq; whatever it changed, the next snapshot re-reads."""
        self._snapshot = None
        return self.loop.run_until_complete(coroutine)

    def refused(self, error: type[Exception], coroutine: Any) -> None:
        with pytest.raises(error):
            self.act(coroutine)

    def pick(self, index: int) -> ModelTask:
        return list(self.tasks.values())[index % len(self.tasks)]

    def live(self) -> list[ModelTask]:
        return [t for t in self.tasks.values() if not t.purged]

    def holders(self, key: str | None, other_than: str = "") -> list[ModelTask]:
        """Tasks that hold `key` or may (`ModelTask.holds_key`), but `other_than`."""
        return [
            t
            for t in self.live()
            if key is not None and t.unique_key == key and t.task_id != other_than
            and t.holds_key() is not False
        ]  # fmt: skip

    def claimable(self, now: float) -> list[ModelTask]:
        """Tasks a claim at `now` takes: due waiting ones, and dead workers' expired leases."""
        return [t for t in self.live() if _due(t, now) or _expired(t, now)]

    def cancel_awaits_takeover(self) -> bool:
        now = self.clock.now()
        return any(t.cancel_requested and _expired(t, now) for t in self.live())

    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = self.loop.run_until_complete(self._read())
        return self._snapshot

    async def _read(self) -> Snapshot:
        history: dict[str, list[Attempt]] = defaultdict(list)
        for record in await self.queue.history():
            history[record.task_id].append(record)
        return Snapshot(
            await self.backend.list_tasks(),
            await self.queue.counts(),
            history,
            await self.queue.dead_letters(),
        )

    # -- dependencies, in the model ---------------------------------------------------------

    def follows_parents(self, task: ModelTask) -> bool:
        return bool(task.parents) and (
            task.status is TaskStatus.BLOCKED
            or (task.status is TaskStatus.CANCELLED and task.error_type == PARENT_FAILED)
        )

    def verdict(self, task: ModelTask, now: float) -> TaskStatus:
        """What its parents say of a child: the model's own reading of the rule."""
        parents = [self.tasks[p] for p in task.parents]
        if any(p.purged or p.status in (TaskStatus.FAILED, TaskStatus.CANCELLED) for p in parents):
            return TaskStatus.CANCELLED
        if any(p.status is not TaskStatus.SUCCEEDED for p in parents):
            return TaskStatus.BLOCKED
        return TaskStatus.SCHEDULED if task.due_at > now else TaskStatus.QUEUED

    def follow(self, now: float) -> None:
        """Decide every child that follows its parents again; parents come first."""
        for task in self.tasks.values():
            if self.follows_parents(task):
                status = self.verdict(task, now)
                task.status = status
                task.error_type = PARENT_FAILED if status is TaskStatus.CANCELLED else None

    def possible(self, task: ModelTask) -> frozenset[TaskStatus]:
        """A blocked child of a parent whose cancel may show at once may show cancelled."""
        if task.status is TaskStatus.BLOCKED and any(
            self.tasks[p].cancel_requested or TaskStatus.CANCELLED in self.possible(self.tasks[p])
            for p in task.parents
        ):
            return frozenset({TaskStatus.BLOCKED, TaskStatus.CANCELLED})
        return task.possible_statuses()

    # -- what the live worker does, in the model ---------------------------------------------

    def execute(self, task: ModelTask, now: float) -> None:
        """The worker runs the function: it succeeds, retries later, or fails for good."""
        task.attempts += 1
        task.executions += 1
        if task.executions > task.failures:
            task.outcomes.append(frozenset({"succeeded"}))
            task.finish(TaskStatus.SUCCEEDED)
            return
        delay = task.policy.delay_after(task.tries)
        if delay is None:
            task.outcomes.append(frozenset({"failed"}))
            task.finish(TaskStatus.FAILED, "TransientError")
        else:
            task.outcomes.append(frozenset({"retrying"}))
            task.status, task.due_at, task.error_type = TaskStatus.RETRYING, now + delay, None

    def take_over(self, task: ModelTask, now: float) -> None:
        """The worker finds a dead worker's expired lease: the lost attempts count."""
        task.outcomes = task.expected_history()
        task.lost, task.lease_until = [], None
        if task.cancel_requested:  # a cancel outlives the worker that was asked to stop
            task.finish(TaskStatus.CANCELLED)
            return
        delay = task.policy.delay_after(task.tries)
        if delay is None:
            task.finish(TaskStatus.FAILED, "WorkerLost")
        elif delay == 0:
            self.execute(task, now)
        else:
            task.status, task.due_at = TaskStatus.RETRYING, now + delay

    # -- rules -------------------------------------------------------------------------------

    @precondition(lambda self: len(self.tasks) < MAX_TASKS)
    @rule(
        failures=st.sampled_from([0, 1, 2, ALWAYS]),
        policy=POLICIES,
        delay=st.sampled_from([0.0, 0.0, 3.0]),
        key=st.sampled_from([None, "invoice-1"]),
    )
    def enqueue(self, failures: int, policy: Policy, delay: float, key: str | None) -> None:
        options: dict[str, Any] = {}
        if policy.build() is not None:
            options["retry"] = policy.build()
        if delay:
            options["delay"] = delay
        if key is not None:
            options["unique_key"] = key
        holders = self.holders(key)
        queue: Any = self.queue.with_options(**options) if options else self.queue
        task_id = self.act(queue.enqueue(fail_then_succeed, failures))
        if task_id in self.tasks:  # the key's holder: nothing was added
            assert [t.task_id for t in holders] == [task_id], "the wrong holder's id"
            return
        assert all(t.holds_key() is None for t in holders), f"{key} held, yet a new task"
        status = TaskStatus.SCHEDULED if delay else TaskStatus.QUEUED
        now = self.clock.now()
        self.tasks[task_id] = ModelTask(
            task_id, failures, policy, status, now + delay, unique_key=key
        )

    @precondition(lambda self: self.periodic is None)
    @rule(
        every=st.sampled_from([2.0, 5.0]),
        missed=st.sampled_from(["last", "skip"]),
        failures=st.sampled_from([0, ALWAYS]),
    )
    def schedule(self, every: float, missed: str, failures: int) -> None:
        info = self.act(
            self.queue.schedule(fail_then_succeed, every=every, args=(failures,), missed=missed)
        )
        assert info.next_at == self.clock.now() + every
        self.periodic = ModelSchedule(every, missed, failures, info.next_at)

    @precondition(lambda self: self.tasks and len(self.tasks) < MAX_TASKS)
    @rule(
        failures=st.sampled_from([0, 0, 1, ALWAYS]),
        picks=st.lists(st.integers(0, MAX_TASKS - 1), min_size=1, max_size=2),
    )
    def enqueue_after(self, failures: int, picks: list[int]) -> None:
        parents = tuple(dict.fromkeys(self.pick(i).task_id for i in picks))
        queue = self.queue.with_options(after=list(parents))
        if any(self.tasks[p].purged for p in parents):
            self.refused(TaskNotFoundError, queue.enqueue(fail_then_succeed, failures))
            return
        task_id = self.act(queue.enqueue(fail_then_succeed, failures))
        now = self.clock.now()
        task = ModelTask(task_id, failures, Policy("none"), TaskStatus.BLOCKED, now,
                         parents=parents)  # fmt: skip
        self.tasks[task_id] = task
        self.follow(now)

    @rule()
    def run_worker_step(self) -> None:
        now = self.clock.now()
        due = self.claimable(now)
        # A cancelled task whose dead worker's lease ran out may be settled by the claim
        # itself rather than handed to the worker: either way is right.
        maybe = sum(t.cancel_requested for t in due)
        # An expired lease whose lost attempt spent the budget is ended by the claim itself.
        spent = sum(_spent(t, now) for t in due)
        tick = None if self.periodic is None else self.periodic.tick(now)
        ran = self.act(self.worker.run_once())
        due += self.tick_task(tick)
        assert len(due) - spent - maybe <= ran <= len(due) - spent, f"ran {ran} of {len(due)}"
        for task in due:
            if task.status is TaskStatus.RUNNING:
                self.take_over(task, now)
            else:
                self.execute(task, now)
        self.follow(now)

    def tick_task(self, tick: float | None) -> list[ModelTask]:
        """The task a worker step enqueued for the schedule's tick: exactly one if the
        model expects a tick, due at the tick's time; none otherwise."""
        rows = self.act(self.backend.list_tasks())
        new = [row for row in rows if row.task_id not in self.tasks]
        assert len(new) == (tick is not None), f"tick {tick}: new tasks {new}"
        if tick is None:
            return []
        assert self.periodic is not None and new[0].due_at == tick
        task = ModelTask(new[0].task_id, self.periodic.failures, Policy("none"),
                         TaskStatus.QUEUED, tick)  # fmt: skip
        self.tasks[task.task_id] = task
        return [task]

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, LEASE + 1, 30.0]))
    def advance_time(self, seconds: float) -> None:
        self._snapshot = None
        self.clock.advance(seconds)

    @precondition(lambda self: not self.cancel_awaits_takeover())
    @rule(limit=st.integers(1, 3), lease_runs_out=st.booleans())
    def a_worker_claims_and_dies(self, limit: int, lease_runs_out: bool) -> None:
        """Claim like a worker, never report; `lease_runs_out` then moves time past the lease
        (advance_time can too, but a takeover needs it so often that it gets a shortcut)."""
        now = self.clock.now()
        candidates = {t.task_id: t for t in self.claimable(now)}
        self.dead_workers += 1
        worker_id = f"dead-{self.dead_workers}"
        budget = state.budget_of(None)  # a worker's default policy, as the live one has
        claimed = self.act(self.backend.claim(worker_id, limit, now, LEASE, default_budget=budget))
        ids = [c.task_id for c in claimed]
        assert len(set(ids)) == len(ids) == min(limit, len(candidates)), ids
        assert set(ids) <= candidates.keys(), f"claimed a task that was not due: {ids}"
        for c in claimed:
            task = candidates[c.task_id]
            assert (c.decided is not None) == _spent(task, now), f"{c.task_id[:8]} decided"
            if c.decided is not None:  # ended by the claim: this worker never holds it
                self.take_over(task, now)
                continue
            task.attempts += 1
            task.lost.append(task.attempts)
            task.status, task.lease_until = TaskStatus.RUNNING, now + LEASE
        self.follow(now)
        if lease_runs_out:
            self.clock.advance(LEASE + 1)

    @precondition(lambda self: self.tasks)
    @rule(index=st.integers(0, MAX_TASKS - 1))
    def cancel(self, index: int) -> None:
        task = self.pick(index)
        if task.purged:
            self.refused(TaskNotFoundError, self.queue.cancel(task.task_id))
            return
        answer = self.act(self.queue.cancel(task.task_id))
        if task.cancel_requested:
            assert isinstance(answer, bool)  # asked again: still running, or cancelled now
        elif task.status in WAITING or task.status is TaskStatus.BLOCKED:
            assert answer is True
            task.finish(TaskStatus.CANCELLED, "Cancelled")
            self.follow(self.clock.now())
        elif task.status is TaskStatus.RUNNING:
            assert answer is True
            task.cancel_requested = True
        else:
            assert answer is False, f"cancel of a {task.status} task answered True"

    @precondition(lambda self: self.tasks)
    @rule(index=st.integers(0, MAX_TASKS - 1))
    def requeue(self, index: int) -> None:
        task = self.pick(index)
        if task.purged:
            self.refused(TaskNotFoundError, self.queue.requeue(task.task_id))
        elif task.cancel_requested:
            return  # running or already cancelled: the model cannot say which
        elif task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED) and (
            holders := self.holders(task.unique_key, other_than=task.task_id)
        ):
            if any(t.holds_key() is None for t in holders):
                return  # the holder may have ended already: the model cannot say
            self.refused(UniqueKeyTakenError, self.queue.requeue(task.task_id))
        elif task.status is TaskStatus.CANCELLED and self.follows_parents(task):
            # cancelled for a parent: it comes back as its parents say now
            now = self.clock.now()
            if self.verdict(task, now) is TaskStatus.CANCELLED:
                self.refused(TaskStateError, self.queue.requeue(task.task_id))
                return
            self.act(self.queue.requeue(task.task_id))
            task.requeued(now)
            task.status = self.verdict(task, now)
            self.follow(now)
        elif task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            self.act(self.queue.requeue(task.task_id))
            task.requeued(self.clock.now())
            self.follow(self.clock.now())
        else:
            self.refused(TaskStateError, self.queue.requeue(task.task_id))

    @rule()
    def purge_dead_letters(self) -> None:
        failed = [t for t in self.live() if t.status is TaskStatus.FAILED]
        assert self.act(self.queue.purge_dead_letters()) == len(failed)
        for task in failed:
            task.purged = True

    @precondition(lambda self: self.tasks)
    @rule(index=st.integers(0, MAX_TASKS - 1))
    def get_result(self, index: int) -> None:
        task = self.pick(index)
        result = self.act(self.queue.get_result(task.task_id, timeout=0))
        if task.purged:
            assert result is None, "a purged task still has a result"
            return
        possible = self.possible(task)
        if result is None:
            assert possible - FINISHED, f"no result, but the task should be {task.status}"
            return
        assert result.status in possible, f"result {result.status}, expected {set(possible)}"
        assert result.attempts == task.attempts
        if result.status is TaskStatus.SUCCEEDED:
            assert result.value == task.executions  # the task returns its execution count
        if result.status is TaskStatus.FAILED:
            assert result.error_type == task.error_type

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def each_task_is_in_exactly_one_state_the_model_allows(self) -> None:
        snap = self.snapshot()
        ids = [row.task_id for row in snap.rows]
        assert len(ids) == len(set(ids)), "a task listed twice"
        assert set(ids) == {t.task_id for t in self.live()}
        tally = Counter(row.status for row in snap.rows)
        assert snap.counts == {status: tally[status] for status in TaskStatus}
        for row in snap.rows:
            task = self.tasks[row.task_id]
            expected = set(self.possible(task))
            assert row.status in expected, f"task {_short(row)}: the model says {expected}"
            assert row.attempts == task.attempts, f"task {_short(row)}: attempts"

    @invariant()
    def attempts_stay_within_the_retry_budget(self) -> None:
        for row in self.snapshot().rows:
            task = self.tasks[row.task_id]
            budget = task.policy.max_attempts
            assert row.attempts - task.cycle_base <= budget, _short(row)
            runs = [n for n in EXECUTIONS[row.task_id] if n > task.cycle_base]
            assert len(runs) <= budget, f"task {_short(row)} ran {len(runs)} times, budget {budget}"

    @invariant()
    def finished_tasks_never_run_again(self) -> None:
        for task in self.tasks.values():
            runs = EXECUTIONS[task.task_id]
            assert len(runs) == task.executions, (
                f"task {task.task_id[:8]} ran {len(runs)} times, expected {task.executions} "
                f"(status {task.status}, purged {task.purged})"
            )

    @invariant()
    def dead_letters_are_exactly_the_failed_tasks(self) -> None:
        snap = self.snapshot()
        dead = sorted(result.task_id for result in snap.dead)
        failed = sorted(row.task_id for row in snap.rows if row.status is TaskStatus.FAILED)
        expected = sorted(t.task_id for t in self.live() if t.status is TaskStatus.FAILED)
        assert dead == failed == expected
        assert all(result.is_failed() for result in snap.dead)

    @invariant()
    def at_most_one_unfinished_task_holds_each_unique_key(self) -> None:
        held = Counter(
            self.tasks[row.task_id].unique_key
            for row in self.snapshot().rows
            if row.status not in FINISHED and self.tasks[row.task_id].unique_key is not None
        )
        assert all(n == 1 for n in held.values()), held

    @invariant()
    def every_attempt_is_in_the_history(self) -> None:
        snap = self.snapshot()
        statuses = {row.task_id: row.status for row in snap.rows}
        for task in self.tasks.values():
            records = snap.history.get(task.task_id, [])
            where = f"task {task.task_id[:8]}: history {[(a.attempt, a.outcome) for a in records]}"
            assert [a.attempt for a in records] == list(range(1, len(records) + 1)), where
            expected = task.expected_history()
            if statuses.get(task.task_id) is TaskStatus.RUNNING:  # the held attempt is open
                assert len(task.outcomes) <= len(records) <= task.attempts - 1, where
            else:
                assert len(records) == task.attempts, f"{where}, {task.attempts} attempts"
            for record, outcomes in zip(records, expected, strict=False):
                assert record.outcome in outcomes, f"{where}, expected {expected}"
            ran = set(EXECUTIONS[task.task_id])
            assert ran <= {a.attempt for a in records if a.outcome != "worker_lost"}, where

    @invariant()
    def no_attempt_starts_before_it_is_due(self) -> None:
        history = self.snapshot().history
        for task in self.tasks.values():
            records = history.get(task.task_id, [])
            for record in records:
                assert record.started_at >= record.scheduled_for, record
            for before, after in itertools.pairwise(records):
                # A retry waits for its delay; a requeue starts afresh, due at once.
                if before.next_delay is not None and before.attempt not in task.requeued_after:
                    due = before.finished_at + before.next_delay
                    assert after.started_at >= due, (before, after)


def _due(task: ModelTask, now: float) -> bool:
    return task.status in WAITING and task.due_at <= now


def _expired(task: ModelTask, now: float) -> bool:
    return task.lease_until is not None and task.lease_until < now


def _spent(task: ModelTask, now: float) -> bool:
    """An expired lease whose lost attempt was the last its budget allowed."""
    return _expired(task, now) and task.tries >= task.policy.max_attempts


def _short(row: TaskInfo) -> str:
    return f"{row.task_id[:8]} ({row.status}, {row.attempts} attempts)"


#: `SITQ_MODEL_EXAMPLES=1500 pytest tests/test_model.py --timeout=0` runs the long check
#: (both backends at that size); the usual run is 150 on SQLite and 25 on PostgreSQL.
LONG_RUN = int(os.environ.get("SITQ_MODEL_EXAMPLES", "0"))

QueueModel.TestCase.settings = settings(
    max_examples=LONG_RUN or 150,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,  # the same sequences on every run and machine: a failure reproduces
    database=None,  # and no .hypothesis folder left in the tree
    report_multiple_bugs=False,  # shrink one failure, not all: a red run ends in ~20 s too
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueModel = QueueModel.TestCase


class PostgresQueueModel(QueueModel):
    """The same model on PostgreSQL (a fresh schema per example): the conformance suite."""

    KIND = "postgres"


PostgresQueueModel.TestCase.settings = settings(
    QueueModel.TestCase.settings, max_examples=LONG_RUN or 25
)  # a schema per example costs more than a file: fewer examples, the same rules
TestPostgresQueueModel = pytest.mark.skipif(
    postgres_unavailable() is not None, reason=str(postgres_unavailable())
)(PostgresQueueModel.TestCase)


# -- the known crash cases, one example each ----------------------------------------------


async def test_a_cancel_survives_the_death_of_the_worker_running_the_task(
    database: Database,
) -> None:
    """Given a running task (with retries) whose cancel was asked, when its worker dies and
    another takes the expired lease over, then the task ends cancelled and never runs, and
    the lost attempt is in its history."""
    clock = FakeClock()
    backend = database.backend()
    async with TaskQueue(backend, clock=clock) as queue:
        retry = RetryPolicy.fixed(0, max_attempts=3)
        task_id = await queue.with_options(retry=retry).enqueue(fail_then_succeed, 0)
        [claimed] = await backend.claim("dies", 1, clock.now(), LEASE)
        assert await queue.cancel(task_id) is True
        clock.advance(LEASE + 1)
        worker = Worker(backend, clock=clock, worker_id="live")
        await worker.run_until_idle()
        await worker.stop()
        info = await queue.get_task(task_id)
        history = await queue.history(task_id)

    assert claimed.task_id == task_id
    assert info.status is TaskStatus.CANCELLED
    assert EXECUTIONS[task_id] == []
    assert [(a.attempt, a.worker_id) for a in history] == [(1, "dies")]
    assert history[0].outcome in LOST_OR_CANCELLED


async def test_two_workers_dying_in_a_row_leave_two_lost_attempts(
    database: Database,
) -> None:
    """Given a task whose worker died, taken over by a second worker that died too, when a
    live worker takes it over, then both lost attempts are in the history before the run
    that succeeds."""
    clock = FakeClock()
    backend = database.backend()
    async with TaskQueue(backend, clock=clock) as queue:
        retry = RetryPolicy.fixed(0, max_attempts=3)
        task_id = await queue.with_options(retry=retry).enqueue(fail_then_succeed, 0)
        for worker_id in ("first", "second"):
            [claimed] = await backend.claim(worker_id, 1, clock.now(), LEASE)
            assert claimed.task_id == task_id
            clock.advance(LEASE + 1)
        worker = Worker(backend, clock=clock, worker_id="live")
        await worker.run_until_idle()
        await worker.stop()
        result = await queue.get_result(task_id, timeout=0)
        history = await queue.history(task_id)

    assert result is not None and result.status is TaskStatus.SUCCEEDED
    assert [(a.attempt, a.worker_id, a.outcome) for a in history] == [
        (1, "first", "worker_lost"),
        (2, "second", "worker_lost"),
        (3, "live", "succeeded"),
    ]
    assert result.attempts == 3
    assert EXECUTIONS[task_id] == [3]


async def test_a_worker_dying_after_finding_a_spent_lease_leaves_no_attempt_over_budget(
    database: Database,
) -> None:
    """Given a task with one attempt whose worker died holding it, when a second worker's
    claim finds the expired lease and that worker dies at once, then the claim has already
    ended the task as a WorkerLost dead letter: 1 attempt of 1, never "2 of 1"."""
    clock = FakeClock()
    backend = database.backend()
    budget = state.budget_of(None)
    async with TaskQueue(backend, clock=clock) as queue:
        task_id = await queue.enqueue(fail_then_succeed, 0)
        await backend.claim("first", 1, clock.now(), LEASE, default_budget=budget)
        clock.advance(LEASE + 1)
        [found] = await backend.claim("second", 1, clock.now(), LEASE, default_budget=budget)
        info = await queue.get_task(task_id)
        history = await queue.history(task_id)

    assert found.decided is TaskStatus.FAILED
    assert (info.status, info.attempts, info.max_attempts) == (TaskStatus.FAILED, 1, 1)
    assert (info.error_type, info.error) == (
        "WorkerLost",
        "worker first stopped renewing its lease",
    )
    assert [(a.attempt, a.worker_id, a.outcome) for a in history] == [(1, "first", "worker_lost")]
    assert EXECUTIONS[task_id] == []

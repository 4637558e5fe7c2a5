"""Task dependencies (issue 24, point 2): `with_options(after=[...])` and `queue.chain`, on
SQLite and PostgreSQL. A child waits blocked (never claimed) until every parent succeeded;
a parent that fails for good or is cancelled cancels it, naming the parent, and the tasks
below it too; a requeue of that parent makes them wait again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sitq import (
    FakeClock,
    InvalidOptionError,
    InvalidScheduleError,
    RetryPolicy,
    SQLiteBackend,
    SyncTaskQueue,
    TaskNotFoundError,
    TaskQueue,
    TaskStateError,
    TaskStatus,
    UniqueKeyTakenError,
    Worker,
    call,
    current_task,
)
from sitq.backends import Backend
from sitq.backends.dependency_store import DependencyStore
from sitq.policy import state

pytestmark = pytest.mark.every_backend  # the conformance suite: SQLite and PostgreSQL

RAN: list[str] = []
BROKEN: set[str] = set()


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()
    BROKEN.clear()


async def step(label: str) -> str:
    RAN.append(label)
    if label in BROKEN:
        raise ValueError(f"step {label} broke")
    return label.upper()


async def parents_seen() -> list[object]:
    return [result.value for result in await current_task().parent_results()]


async def statuses(queue: TaskQueue, ids: list[str]) -> list[TaskStatus]:
    return [await queue.status(task_id) for task_id in ids]


async def test_a_chain_runs_in_order_and_each_step_waits(queue: TaskQueue, worker: Worker):
    ids = await queue.chain(call(step, "a"), call(step, "b"), call(step, "c"))
    blocked = TaskStatus.BLOCKED
    assert await statuses(queue, ids) == [TaskStatus.QUEUED, blocked, blocked]
    assert (await queue.summary()).blocked == 2
    assert await worker.run_once() == 1  # only the first step is claimable
    assert RAN == ["a"]
    assert await statuses(queue, ids) == [TaskStatus.SUCCEEDED, TaskStatus.QUEUED, blocked]
    await worker.run_until_idle()
    assert RAN == ["a", "b", "c"]
    assert [r.value for r in await queue.gather(ids) if r is not None] == ["A", "B", "C"]


async def test_a_failing_middle_step_cancels_the_rest_naming_its_parent(
    queue: TaskQueue, worker: Worker
) -> None:
    BROKEN.add("b")
    a, b, c, d = await queue.chain(*(call(step, x) for x in "abcd"))
    await worker.run_until_idle()
    assert RAN == ["a", "b"]
    assert await statuses(queue, [a, b, c, d]) == [
        TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.CANCELLED,
    ]  # fmt: skip
    c_info, d_info = await queue.get_task(c), await queue.get_task(d)
    assert c_info.error_type == d_info.error_type == state.PARENT_FAILED
    assert c_info.error == f"parent task {b} failed: step b broke"
    assert d_info.error is not None and d_info.error.startswith(f"parent task {c} was cancelled")
    assert b in d_info.error  # the root cause is named all the way down
    assert c_info.attempts == 0 and c_info.finished_at is not None


async def test_requeue_of_the_failed_parent_makes_its_children_wait_again(
    queue: TaskQueue, worker: Worker
) -> None:
    BROKEN.add("b")
    a, b, c, d = await queue.chain(*(call(step, x) for x in "abcd"))
    await worker.run_until_idle()
    with pytest.raises(TaskStateError, match=f"parent task {b} failed"):
        await queue.requeue(c)  # its parent is still a dead letter: requeue that one
    assert await queue.status(c) is TaskStatus.CANCELLED
    BROKEN.clear()
    await queue.requeue(b)
    assert await statuses(queue, [b, c, d]) == [
        TaskStatus.QUEUED, TaskStatus.BLOCKED, TaskStatus.BLOCKED,
    ]  # fmt: skip
    assert (await queue.get_task(c)).error is None
    await worker.run_until_idle()
    assert RAN == ["a", "b", "b", "c", "d"]
    assert await statuses(queue, [a, b, c, d]) == [TaskStatus.SUCCEEDED] * 4


async def test_cancelling_a_parent_cancels_its_children(queue: TaskQueue, worker: Worker):
    parent = await queue.enqueue(step, "p")
    child = await queue.with_options(after=[parent]).enqueue(step, "c")
    grandchild = await queue.with_options(after=child).enqueue(step, "g")  # one id: a str
    assert await queue.cancel(parent)
    assert await statuses(queue, [parent, child, grandchild]) == [TaskStatus.CANCELLED] * 3
    assert (await queue.get_task(child)).error == (
        f"parent task {parent} was cancelled: cancelled before it ran"
    )
    assert await worker.run_until_idle() == 0
    await queue.requeue(parent)  # a cancelled parent, requeued: the tree waits again
    await worker.run_until_idle()
    assert RAN == ["p", "c", "g"]


async def test_cancelling_a_blocked_child_leaves_its_parent_alone(
    queue: TaskQueue, worker: Worker
) -> None:
    parent = await queue.enqueue(step, "p")
    child = await queue.with_options(after=[parent]).enqueue(step, "c")
    assert await queue.cancel(child)
    await worker.run_until_idle()
    assert RAN == ["p"]
    assert (await queue.get_task(child)).error_type == "Cancelled"
    await queue.requeue(child)  # cancelled by hand: a requeue runs it (its parent succeeded)
    await worker.run_until_idle()
    assert RAN == ["p", "c"]


async def test_a_diamond_waits_for_both_sides(queue: TaskQueue, worker: Worker) -> None:
    top = await queue.enqueue(step, "top")
    left = await queue.with_options(after=[top]).enqueue(step, "left")
    right = await queue.with_options(after=[top]).enqueue(step, "right")
    bottom = await queue.with_options(after=[left, right, left]).enqueue(step, "bottom")
    worker.concurrency = 1
    await worker.run_once()  # top
    await worker.run_once()  # one side
    assert await queue.status(bottom) is TaskStatus.BLOCKED
    await worker.run_until_idle()
    assert RAN[0] == "top" and RAN[-1] == "bottom" and sorted(RAN[1:3]) == ["left", "right"]


async def test_one_failed_side_of_a_diamond_cancels_the_bottom_and_names_it(
    queue: TaskQueue, worker: Worker
) -> None:
    BROKEN.add("right")
    top = await queue.enqueue(step, "top")
    left = await queue.with_options(after=[top]).enqueue(step, "left")
    right = await queue.with_options(after=[top]).enqueue(step, "right")
    bottom = await queue.with_options(after=[left, right]).enqueue(step, "bottom")
    await worker.run_until_idle()
    info = await queue.get_task(bottom)
    assert info.status is TaskStatus.CANCELLED
    assert info.error == f"parent task {right} failed: step right broke"
    assert "bottom" not in RAN


async def test_a_child_of_a_finished_parent_is_decided_at_enqueue(
    queue: TaskQueue, worker: Worker
) -> None:
    BROKEN.add("bad")
    good, bad = await queue.enqueue(step, "good"), await queue.enqueue(step, "bad")
    await worker.run_until_idle()
    ready = await queue.with_options(after=[good]).enqueue(step, "ready")
    doomed = await queue.with_options(after=[good, bad]).enqueue(step, "doomed")
    assert await queue.status(ready) is TaskStatus.QUEUED
    info = await queue.get_task(doomed)
    assert info.status is TaskStatus.CANCELLED
    assert info.error == f"parent task {bad} failed: step bad broke"
    assert (await queue.get_result(doomed, timeout=0)) is not None  # finished: no wait


async def test_a_delayed_child_keeps_its_due_time(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    parent = await queue.enqueue(step, "p")
    child = await queue.with_options(after=[parent], delay=60).enqueue(step, "c")
    await worker.run_once()
    assert await queue.status(child) is TaskStatus.SCHEDULED  # released, not due yet
    assert await worker.run_once() == 0
    clock.advance(60)
    await worker.run_once()
    assert RAN == ["p", "c"]


async def test_a_retried_parent_keeps_its_children_waiting(queue: TaskQueue, worker: Worker):
    BROKEN.add("p")
    parent = await queue.with_options(retry=RetryPolicy.fixed(0, max_attempts=2)).enqueue(step, "p")
    child = await queue.with_options(after=[parent]).enqueue(step, "c")
    await worker.run_once()
    assert await queue.status(parent) is TaskStatus.RETRYING
    assert await queue.status(child) is TaskStatus.BLOCKED
    BROKEN.clear()
    await worker.run_until_idle()
    assert RAN == ["p", "p", "c"]


async def test_unknown_parent_ids_are_refused_and_nothing_is_stored(queue: TaskQueue) -> None:
    real = await queue.enqueue(step, "real")
    with pytest.raises(TaskNotFoundError, match="no-such-id"):
        await queue.with_options(after=[real, "no-such-id"]).enqueue(step, "x")
    with pytest.raises(TaskNotFoundError, match="no-such-id"):
        await queue.with_options(after=["no-such-id"]).chain(call(step, "y"), call(step, "z"))
    assert (await queue.summary()).total == 1  # nothing stored, not even a chain's first
    for bad in (42, [42], [""], {"a": 1}):
        with pytest.raises(InvalidOptionError, match="after="):
            queue.with_options(after=bad)  # type: ignore[arg-type]


async def test_a_unique_key_is_refused_with_after_or_chain(queue: TaskQueue) -> None:
    """A held key gives back another task's id, one that waits for no parent of these: the
    two options do not go together, and nothing is stored."""
    first = await queue.enqueue(step, "first")
    both = queue.with_options(unique_key="k", after=[first])
    with pytest.raises(InvalidOptionError, match="unique_key= does not go with after="):
        await both.enqueue(step, "x")
    with pytest.raises(InvalidOptionError, match="chain"):
        await queue.with_options(unique_key="k").chain(call(step, "y"), call(step, "z"))
    with pytest.raises(InvalidScheduleError, match="after="):
        await queue.with_options(after=[first]).schedule(step, every=60.0, args=("t",))
    assert (await queue.summary()).total == 1


async def test_requeue_of_a_parent_whose_key_is_held_now_leaves_its_children_cancelled(
    queue: TaskQueue, worker: Worker
) -> None:
    """Both of requeue's questions: the key's new holder refuses it (UniqueKeyTakenError),
    and its children stay cancelled; once the holder is gone they wait for it again."""
    BROKEN.add("p")
    parent = await queue.with_options(unique_key="k").enqueue(step, "p")
    child = await queue.with_options(after=[parent]).enqueue(step, "c")
    await worker.run_until_idle()
    holder = await queue.with_options(unique_key="k").enqueue(step, "h")  # the key is free
    assert holder != parent
    with pytest.raises(UniqueKeyTakenError, match=holder):
        await queue.requeue(parent)
    assert await statuses(queue, [parent, child]) == [TaskStatus.FAILED, TaskStatus.CANCELLED]
    await queue.cancel(holder)
    BROKEN.clear()
    await queue.requeue(parent)
    assert await statuses(queue, [parent, child]) == [TaskStatus.QUEUED, TaskStatus.BLOCKED]
    await worker.run_until_idle()
    assert await statuses(queue, [parent, child]) == [TaskStatus.SUCCEEDED] * 2


async def test_after_is_refused_on_the_decorator() -> None:
    import sitq

    with pytest.raises(InvalidOptionError, match="per call"):
        sitq.task(after=["x"])


async def test_a_child_reads_its_parents_results(queue: TaskQueue, worker: Worker) -> None:
    one, two = await queue.enqueue(step, "one"), await queue.enqueue(step, "two")
    child = await queue.with_options(after=[two, one]).enqueue(parents_seen)
    await worker.run_until_idle()
    result = await queue.get_result(child, timeout=0)
    assert result is not None and result.value == ["TWO", "ONE"]  # in the order named


async def test_enqueue_many_after_one_parent(queue: TaskQueue, worker: Worker) -> None:
    parent = await queue.enqueue(step, "p")
    ids = await queue.with_options(after=[parent]).enqueue_many([call(step, x) for x in "xyz"])
    assert await statuses(queue, ids) == [TaskStatus.BLOCKED] * 3
    await worker.run_until_idle()
    assert RAN[0] == "p" and sorted(RAN[1:]) == ["x", "y", "z"]


async def test_purged_parent_leaves_a_clear_error_on_requeue_of_its_child(
    queue: TaskQueue, worker: Worker
) -> None:
    BROKEN.add("p")
    parent = await queue.enqueue(step, "p")
    child = await queue.with_options(after=[parent]).enqueue(step, "c")
    await worker.run_until_idle()
    assert await queue.purge_dead_letters() == 1
    with pytest.raises(TaskStateError, match=f"parent task {parent} is gone"):
        await queue.requeue(child)
    with pytest.raises(TaskNotFoundError):
        await queue.with_options(after=[parent]).enqueue(step, "late")


def another_backend_on(backend: Backend) -> Backend:
    """A second backend object (its own connections) on the same store."""
    if isinstance(backend, SQLiteBackend):
        return SQLiteBackend(backend.path)
    from sitq.backends.postgres import PostgresBackend

    assert isinstance(backend, PostgresBackend)
    return PostgresBackend(backend.dsn, schema=backend.schema)


async def test_two_parents_settled_at_once_by_two_workers_release_their_child(
    queue: TaskQueue, backend: Backend, clock: FakeClock
) -> None:
    """The last parent's settle releases the child, whichever settles last: on PostgreSQL
    the second settle waits for the first to commit, then reads both outcomes."""
    other = another_backend_on(backend)
    await other.connect()
    try:
        one = Worker(backend, clock=clock, concurrency=1, worker_id="one")
        two = Worker(other, clock=clock, concurrency=1, worker_id="two")
        for n in range(8):
            a, b = await queue.enqueue(step, f"a{n}"), await queue.enqueue(step, f"b{n}")
            child = await queue.with_options(after=[a, b]).enqueue(step, f"c{n}")
            assert await asyncio.gather(one.run_once(), two.run_once()) == [1, 1]
            assert await statuses(queue, [a, b]) == [TaskStatus.SUCCEEDED] * 2
            assert await queue.status(child) is TaskStatus.QUEUED, n
            assert await one.run_once() == 1
        await one.stop()
        await two.stop()
    finally:
        await other.close()


async def test_a_parent_lost_with_its_budget_spent_cancels_its_children(
    queue: TaskQueue, backend: Backend, worker: Worker, clock: FakeClock
) -> None:
    """The claim that finds the dead worker's expired lease ends the parent (WorkerLost,
    `state.LOST_WHEN_SPENT`) and its children in the same transaction."""
    parent = await queue.enqueue(step, "p")
    child = await queue.with_options(after=[parent]).enqueue(step, "c")
    grandchild = await queue.with_options(after=[child]).enqueue(step, "g")
    [held] = await backend.claim("dead-worker", 1, clock.now(), 30.0)
    assert held.task_id == parent
    clock.advance(31)
    await worker.run_once()  # its claim ends the parent (and reports it: nothing ran)
    assert (await queue.get_task(parent)).error_type == "WorkerLost"
    info = await queue.get_task(child)
    assert info.status is TaskStatus.CANCELLED
    assert (
        info.error == f"parent task {parent} failed: worker dead-worker stopped renewing its lease"
    )
    assert await queue.status(grandchild) is TaskStatus.CANCELLED
    await queue.requeue(parent)
    await worker.run_until_idle()
    assert RAN == ["p", "c", "g"]


def test_a_chain_from_plain_code(tmp_path: Path) -> None:
    """The blocking client has `chain` and `with_options(after=...)` too."""
    with SyncTaskQueue(SQLiteBackend(tmp_path / "sync.db"), clock=FakeClock()) as queue:
        first, second = queue.chain(call(step, "one"), call(step, "two"))
        third = queue.with_options(after=[second]).enqueue(step, "three")
        assert queue.status(third) is TaskStatus.BLOCKED
        queue.worker().run_until_idle()
        assert [queue.status(i) for i in (first, second, third)] == [TaskStatus.SUCCEEDED] * 3


async def test_pruning_a_finished_child_forgets_its_parents(
    queue: TaskQueue, worker: Worker, backend: Backend, clock: FakeClock
) -> None:
    parent = await queue.enqueue(step, "p")
    child = await queue.with_options(after=[parent]).enqueue(step, "c")
    await worker.run_until_idle()
    assert isinstance(backend, DependencyStore)
    assert await backend.parents_of(child) == [parent]
    clock.advance(3600)
    assert await queue.prune(60) == 2
    assert await backend.parents_of(child) == []

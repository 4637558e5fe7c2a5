"""Issue 4, point 2: enqueue_many (one transaction, ids in order), gather (results in
submission order, None on timeout) and the progress bar for waiting on many tasks."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import sitq
from sitq import (
    FakeClock,
    InvalidTaskError,
    SerializationError,
    TaskNotFoundError,
    TaskQueue,
    TaskStatus,
    Worker,
)

pytestmark = pytest.mark.every_backend  # the conformance suite: SQLite and PostgreSQL


async def square(n: int) -> int:
    return n * n


def describe(n: int, *, unit: str = "kg") -> str:
    return f"{n} {unit}"


async def total_tasks(queue: TaskQueue) -> int:
    return sum((await queue.counts()).values())


async def test_ids_come_back_in_order(queue: TaskQueue, worker: Worker) -> None:
    ids = await queue.enqueue_many([sitq.call(square, n) for n in range(20)])

    assert len(ids) == len(set(ids)) == 20
    await worker.run_until_idle()
    for n, task_id in enumerate(ids):
        result = await queue.get_result(task_id, timeout=1)
        assert result is not None and result.value == n * n


async def test_calls_and_tuples_with_keywords(queue: TaskQueue, worker: Worker) -> None:
    ids = await queue.enqueue_many(
        [
            sitq.call(describe, 1, unit="g"),
            (describe, (2,)),
            (describe, [3], {"unit": "t"}),
        ]
    )
    await worker.run_until_idle()
    assert [r.value for r in await queue.gather(ids)] == ["1 g", "2 kg", "3 t"]


async def test_one_unpicklable_argument_inserts_nothing(queue: TaskQueue) -> None:
    calls = [sitq.call(describe, 1), sitq.call(describe, threading.Lock()), sitq.call(describe, 3)]

    with pytest.raises(SerializationError, match="argument 0") as caught:
        await queue.enqueue_many(calls)

    assert "lock" in str(caught.value)
    assert await total_tasks(queue) == 0


async def test_one_bad_item_inserts_nothing(queue: TaskQueue) -> None:
    with pytest.raises(InvalidTaskError):
        await queue.enqueue_many([sitq.call(square, 1), ("not a function", (2,))])
    with pytest.raises(InvalidTaskError):
        await queue.enqueue_many([sitq.call(square, 1), square])  # a bare function
    assert await total_tasks(queue) == 0


async def test_an_empty_batch_is_fine(queue: TaskQueue) -> None:
    assert await queue.enqueue_many([]) == []
    assert await queue.gather([]) == []


async def test_options_apply_to_the_whole_batch(queue: TaskQueue) -> None:
    ids = await queue.with_options(delay=60, name="later").enqueue_many(
        [sitq.call(square, n) for n in range(3)]
    )
    for task_id in ids:
        info = await queue.get_task(task_id)
        assert (info.status, info.name) == (TaskStatus.SCHEDULED, "later")


async def test_gather_follows_the_order_asked_for(queue: TaskQueue, worker: Worker) -> None:
    ids = await queue.enqueue_many([sitq.call(square, n) for n in range(5)])
    await worker.run_until_idle()

    backwards = await queue.gather(list(reversed(ids)))
    assert [r.value for r in backwards if r] == [16, 9, 4, 1, 0]
    twice = await queue.gather([ids[2], ids[2]])
    assert [r.value for r in twice if r] == [4, 4]


async def test_gather_gives_none_for_tasks_unfinished_at_the_timeout(
    queue: TaskQueue, worker: Worker
) -> None:
    now = await queue.enqueue_many([sitq.call(square, 2), sitq.call(square, 3)])
    later = await queue.with_options(delay=60).enqueue(square, 4)
    await worker.run_once()  # FakeClock: the delayed task is not due, so it stays waiting

    results = await queue.gather([now[0], later, now[1]], timeout=0.05)

    assert [r and r.value for r in results] == [4, None, 9]


async def test_gather_unknown_ids(queue: TaskQueue, worker: Worker) -> None:
    [task_id] = await queue.enqueue_many([sitq.call(square, 2)])
    await worker.run_until_idle()
    with pytest.raises(TaskNotFoundError, match="nope"):
        await queue.gather([task_id, "nope"])
    results = await queue.gather([task_id, "nope"], missing_ok=True)
    assert results[0] is not None and results[0].value == 4 and results[1] is None


async def test_a_batch_of_many_runs_in_one_go(backend, clock: FakeClock) -> None:
    worker = Worker(backend, clock=clock, concurrency=50)
    async with TaskQueue(backend, clock=clock) as queue:
        ids = await queue.enqueue_many([sitq.call(square, n) for n in range(500)])
        assert await worker.run_until_idle() == 500
        results = await queue.gather(ids, timeout=5)
    await worker.stop()
    assert [r.value for r in results if r] == [n * n for n in range(500)]


async def test_a_big_batch_pauses_the_cycle_collector_and_always_restores_it(backend) -> None:
    """Building 10k rows would run Python's cycle collector again and again (it may walk
    every object of the program); it is paused meanwhile, and on again afterwards, also
    when a call in the batch is refused."""
    import gc

    seen: list[bool] = []

    class Watching(sitq.CloudpickleSerializer):
        def encode_call(self, call: Any, *, task_id: str | None = None) -> bytes:
            seen.append(gc.isenabled())
            return super().encode_call(call, task_id=task_id)

    async with TaskQueue(backend, Watching()) as queue:
        await queue.enqueue_many([sitq.call(square, n) for n in range(1500)])
        assert seen and not any(seen)  # paused while the rows were built
        assert gc.isenabled()
        seen.clear()
        await queue.enqueue_many([sitq.call(square, n) for n in range(10)])
        assert all(seen)  # a small batch leaves it alone
        bad: list[Any] = [(square, (n,)) for n in range(1500)]
        bad[1200] = (42, ())
        with pytest.raises(InvalidTaskError, match="call #1200"):
            await queue.enqueue_many(bad)
        assert gc.isenabled()
        assert await total_tasks(queue) == 1510


# -- the progress bar ---------------------------------------------------------------------


async def test_progress_true_draws_a_tqdm_bar_on_stderr(
    queue: TaskQueue, worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await queue.enqueue_many([sitq.call(square, n) for n in range(3)])
    await worker.run_until_idle()
    capsys.readouterr()

    await queue.gather(ids, progress=True)

    captured = capsys.readouterr()
    assert captured.out == ""
    assert "tasks: 100%" in captured.err and "3/3" in captured.err


async def test_no_bar_by_default_when_not_on_a_terminal(
    queue: TaskQueue, worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await queue.enqueue_many([sitq.call(square, n) for n in range(3)])
    await worker.run_until_idle()
    capsys.readouterr()

    await queue.gather(ids)  # capsys's stderr is not a TTY, like a log file or CI
    await queue.gather(ids, progress=False)

    assert capsys.readouterr() == ("", "")


async def test_the_bar_counts_only_what_finished(
    queue: TaskQueue, worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    done = await queue.enqueue(square, 1)
    later = await queue.with_options(delay=60).enqueue(square, 2)
    await worker.run_once()
    capsys.readouterr()

    await queue.gather([done, later], timeout=0.05, progress=True)

    err = capsys.readouterr().err
    assert "1/2" in err and "2/2" not in err

"""Rate limits shared by workers: at most N starts of a task name per period, on every backend.

The count lives in the database (`Backend.take_rate_slot`), so two workers (two
connections here, two processes in the last test) share it. A task over the limit is not
run: it waits until the window has room, its attempt given back (`state.rate_limited`), so
a rate-limited task never spends its retry budget on waiting.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path

import pytest
from backends import Database
from limit_tasks import limited
from worker_processes import workers

from sitq import FakeClock, InvalidOptionError, RetryPolicy, TaskQueue, TaskStatus, Worker, task
from sitq.policy.rate_limits import RateLimit, Slot, parse

pytestmark = pytest.mark.every_backend  # the conformance suite: SQLite and PostgreSQL


@task(rate_limit="5/s")
async def fetch(n: int) -> int:
    return n


async def call_api(n: int) -> int:
    return n


FAILED_ONCE: set[int] = set()


async def fail_once(n: int) -> int:
    if n not in FAILED_ONCE:
        FAILED_ONCE.add(n)
        raise ValueError(f"{n} fails the first time")
    return n


@pytest.fixture(autouse=True)
def _forget_failures() -> None:
    FAILED_ONCE.clear()


# -- the spec and the rule, without a database ----------------------------------------------


@pytest.mark.parametrize(
    ("spec", "count", "period"),
    [("10/s", 10, 1.0), ("100/m", 100, 60.0), ("1000/h", 1000, 3600.0), ("3/d", 3, 86400.0),
     ("5/10s", 5, 10.0), (" 2 / 0.5s ", 2, 0.5)],
)  # fmt: skip
def test_a_spec_names_starts_per_period(spec: str, count: int, period: float) -> None:
    assert parse(spec) == RateLimit(count, period)


@pytest.mark.parametrize("spec", ["10/x", "0/s", "-1/m", "10", "ten/s", "5/0s", "", "1.5/s"])
def test_a_bad_spec_is_a_typed_error_that_names_the_accepted_forms(spec: str) -> None:
    with pytest.raises(InvalidOptionError, match='"N/s", "N/m", "N/h", "N/d"'):
        parse(spec)
    with pytest.raises(InvalidOptionError, match=r"N/s"):
        task(rate_limit=spec)
    with pytest.raises(InvalidOptionError, match=r"rate_limits\['call_api'\]"):
        Worker("unused.db", rate_limits={"call_api": spec})


@pytest.mark.parametrize("limits", [["call_api"], {"call_api": 10}, {3: "10/s"}])
def test_rate_limits_of_the_wrong_shape_are_a_typed_error(limits: object) -> None:
    with pytest.raises(InvalidOptionError, match="rate_limits"):
        Worker("unused.db", rate_limits=limits)  # type: ignore[arg-type]


def test_a_start_waits_until_the_nth_latest_slot_is_a_period_old() -> None:
    five_a_second = RateLimit(5, 1.0)
    assert five_a_second.wait(None, now=0.5) is None  # fewer than five slots in the window
    assert five_a_second.wait(0.0, now=0.5) == pytest.approx(0.5)
    assert five_a_second.wait(0.0, now=1.0) is None  # 0.0 has left the window


def test_a_task_that_must_wait_books_the_earliest_slot_that_keeps_the_rule() -> None:
    two_a_second = RateLimit(2, 1.0)
    assert two_a_second.slot(None, None, now=0.0) == Slot(wait=None, book=0.0)
    assert two_a_second.slot(None, 0.0, now=0.2) == Slot(wait=0.8, book=1.0)
    # booked slots count like starts: with 1.0 booked twice, the next one books 2.0
    assert two_a_second.slot(None, 1.0, now=0.2) == Slot(wait=1.8, book=2.0)


def test_a_task_back_for_its_booked_slot_starts_on_it_and_never_twice() -> None:
    limit = RateLimit(2, 1.0)
    assert limit.slot(1.0, 1.0, now=1.0) == Slot(wait=None, spent_booking=True)
    assert limit.slot(1.0, 1.0, now=0.9) == Slot(wait=pytest.approx(0.1))


# -- workers ------------------------------------------------------------------------------------


async def test_starts_under_5_per_second_make_a_timeline_of_fives(
    queue: TaskQueue, worker: Worker, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Twelve tasks limited to 5/s, enqueued at once: five start at 0 s, five at 1 s, two
    at 2 s; none spent an attempt waiting, and each history holds its one real attempt.
    The seven that waited were each sent back once, to a slot booked for it."""
    caplog.set_level(logging.INFO, logger="sitq.worker")
    start = clock.now()
    ids = [await queue.enqueue(fetch, n) for n in range(12)]
    await worker.run_until_idle()
    history = await queue.history()
    timeline = Counter(round(a.started_at - start, 6) for a in history)
    assert timeline == {0.0: 5, 1.0: 5, 2.0: 2}
    sent_back = [r.getMessage().split()[1] for r in caplog.records if "for its slot" in r.message]
    assert len(sent_back) == len(set(sent_back)) == 7
    results = await queue.gather(ids, timeout=0)
    assert all(r is not None and r.is_success() and r.attempts == 1 for r in results)
    assert sorted(a.task_id for a in history) == sorted(ids)


async def test_a_rate_limited_wait_spends_no_retry_budget(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    """Tasks with one attempt in their budget, kept waiting by the limit, still run."""
    once = RetryPolicy.fixed(0, max_attempts=1)
    ids = [await queue.with_options(retry=once, rate_limit="1/s").enqueue(call_api, n)
           for n in range(3)]  # fmt: skip
    assert await worker.run_once() == 3  # one started, two sent back to wait
    waiting = [await queue.get_task(i) for i in ids[1:]]
    assert {(t.status, t.attempts) for t in waiting} == {(TaskStatus.SCHEDULED, 0)}
    assert sorted(t.due_at - clock.now() for t in waiting) == [1.0, 2.0]  # a slot each
    await worker.run_until_idle()
    results = await queue.gather(ids, timeout=0)
    assert [(r.status, r.attempts) for r in results if r] == [(TaskStatus.SUCCEEDED, 1)] * 3


async def test_a_retry_asks_for_a_new_slot_and_never_reuses_the_one_it_started_on(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    """Under 1/s, two tasks that each fail once and retry at once: four starts, one a
    second, whichever slot (fresh or booked) each attempt started on."""
    retry = RetryPolicy.fixed(0, max_attempts=2)
    start = clock.now()
    ids = [await queue.with_options(retry=retry, rate_limit="1/s").enqueue(fail_once, n)
           for n in range(2)]  # fmt: skip
    await worker.run_until_idle()
    history = await queue.history()
    assert sorted(round(a.started_at - start, 6) for a in history) == [0.0, 1.0, 2.0, 3.0]
    results = await queue.gather(ids, timeout=0)
    assert [(r.status, r.attempts) for r in results if r] == [(TaskStatus.SUCCEEDED, 2)] * 2


async def test_slots_booked_for_tasks_cancelled_while_they_waited_are_free_again(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    """Under 1/s, five tasks: one starts, four book 1, 2, 3 and 4 s and are cancelled. A
    new task then books the first slot free, 1 s, not 5 s behind the cancelled ones."""
    limited_ids = [await queue.with_options(rate_limit="1/s").enqueue(call_api, n)
                   for n in range(5)]  # fmt: skip
    assert await worker.run_once() == 5
    for task_id in limited_ids[1:]:
        assert await queue.cancel(task_id)
    late = await queue.with_options(rate_limit="1/s").enqueue(call_api, 5)
    assert await worker.run_once() == 1
    assert (await queue.get_task(late)).due_at == clock.now() + 1.0


async def test_two_workers_share_one_limit(database: Database) -> None:
    """Two workers, each on its own connection, both told 5/s for call_api and able to
    run three at once, take turns on one FakeClock: both run some, and in every one-second
    window there are at most five starts between them."""
    clock = FakeClock()
    limits = {"call_api": "5/s"}
    one, two = database.backend(), database.backend()
    w1, w2 = (
        Worker(backend, clock=clock, worker_id=name, rate_limits=limits, concurrency=3,
               rng=random.Random(0))
        for backend, name in ((one, "w1"), (two, "w2"))
    )  # fmt: skip
    async with TaskQueue(one, clock=clock) as queue:
        ids = await queue.enqueue_many([(call_api, (n,)) for n in range(23)])
        for _ in range(60):  # 6 s of 0.1 s steps, the workers alternating
            await w1.run_once()
            await w2.run_once()
            clock.advance(0.1)
        await w1.stop()
        await w2.stop()
        history = await queue.history()
        results = await queue.gather(ids, timeout=0)
    starts = sorted(a.started_at for a in history)
    assert len(starts) == 23
    spans = [later - earlier for earlier, later in zip(starts, starts[5:], strict=False)]
    assert min(spans) >= 1.0 - 1e-6, spans  # a FakeClock at epoch seconds: float rounding
    assert {a.worker_id for a in history} == {"w1", "w2"}
    assert all(r is not None and r.attempts == 1 for r in results)


async def test_two_worker_processes_share_one_limit(database: Database, tmp_path: Path) -> None:
    """Two real worker processes run 15 tasks limited to 5/s (`limit_tasks.limited`): any
    six starts in a row span about a second or more (less only by the moment between a
    start being counted and being stamped), so the last starts two seconds after the first."""
    log = tmp_path / "log"
    options = ("--import", "limit_tasks", "--concurrency", "2")
    with workers(database.url, log, tmp_path, 2, *options):
        async with TaskQueue(database.url) as queue:
            ids = [await queue.enqueue(limited, f"k{n}") for n in range(15)]
            results = await queue.gather(ids, timeout=60)
            history = await queue.history()
    assert all(r is not None and r.is_success() and r.attempts == 1 for r in results)
    starts = sorted(a.started_at for a in history)
    assert len(starts) == 15
    stamped_late = 0.2  # seconds a start's stamp may trail its count on a busy machine
    spans = [later - earlier for earlier, later in zip(starts, starts[5:], strict=False)]
    assert min(spans) >= 1.0 - stamped_late, spans
    assert starts[-1] - starts[0] >= 2.0 - stamped_late
    assert len({a.worker_id for a in history}) == 2

"""Periodic tasks: declared once, each tick enqueued once by whichever worker comes first.

The policy (`sitq.policy.schedule`) is tested on its own first; then the conformance suite
(SQLite and PostgreSQL) runs schedules through queues and workers on a FakeClock, races
workers for the same tick in one process and in two real worker processes.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from backends import POSTGRES_URL, Database, discard, make_database
from reliability_tasks import count, tally
from worker_processes import wait_until, workers

from sitq import (
    FakeClock,
    SignedSerializer,
    SQLiteBackend,
    SyncTaskQueue,
    TaskQueue,
    TaskStatus,
    Worker,
)
from sitq.backends.base import NewTask
from sitq.backends.schedule_rows import ScheduleFire
from sitq.cli import main
from sitq.errors import InvalidOptionError, InvalidScheduleError, SitqError
from sitq.overview import QueueSummary
from sitq.policy import schedule as policy
from sitq.policy.retry import RetryPolicy

pytestmark = pytest.mark.every_backend

HOUR = 3600.0
DAY = 86400.0
RUNS: collections.Counter[str] = collections.Counter()


async def beat(key: str) -> str:
    RUNS[key] += 1
    return key


# -- the policy, no database ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("every", "cron", "tz", "words"),
    [
        (None, None, None, "exactly one of every="),
        (60, "* * * * *", None, "exactly one of every="),
        (0, None, None, "positive, finite"),
        (-5, None, None, "positive, finite"),
        (float("inf"), None, None, "positive, finite"),
        ("60", None, None, "seconds (a number) or a datetime.timedelta"),
        (True, None, None, "seconds (a number)"),
        (dt.timedelta(0), None, None, "positive, finite"),
        (None, "*/5 * * *", None, "has 4 fields; a cron expression has five"),
        (None, "0 0 0 * * *", None, "has 6 fields"),
        (None, "61 * * * *", None, "not a valid cron expression"),
        (None, "* * * * FUNDAY", None, "not a valid cron expression"),
        (None, 5, None, "must be a string"),
        (None, "0 0 30 2 *", None, "not a valid cron expression"),
        (None, "* * * * *", "Mars/Olympus", "not a time zone this machine knows"),
        (None, "* * * * *", "", "name of a time zone"),
        (60, None, "Europe/Paris", "no meaning for every="),
    ],
)
def test_bad_timings_raise_a_typed_error_naming_the_fix(
    every: object, cron: object, tz: object, words: str
) -> None:
    with pytest.raises(InvalidScheduleError, match=re.escape(words)) as caught:
        policy.timing(every, cron, tz)  # type: ignore[arg-type]
    assert isinstance(caught.value, InvalidOptionError | SitqError | ValueError)


def test_a_bad_missed_policy_names_both_choices() -> None:
    with pytest.raises(InvalidScheduleError, match=r"'last'.*'skip'"):
        policy.missed_policy("all")


def test_an_interval_ticks_every_period_after_its_declaration() -> None:
    timing = policy.timing(every=dt.timedelta(minutes=30))
    assert timing.first_tick(1000.0) == 2800.0
    assert timing.next_after(2800.0) == 4600.0


def test_a_cron_schedule_is_read_in_its_time_zone_across_daylight_saving_time() -> None:
    """9:00 in Paris is 8:00 UTC in winter and 7:00 UTC in summer (DST began on
    2026-03-29)."""
    timing = policy.timing(cron="0 9 * * *", tz="Europe/Paris")
    winter = dt.datetime(2026, 3, 28, 12, tzinfo=dt.UTC).timestamp()
    first = timing.next_after(winter)
    second = timing.next_after(first)
    assert dt.datetime.fromtimestamp(first, dt.UTC).hour == 7  # the 29th, already summer
    assert second - first == DAY
    before = timing.next_after(winter - DAY)
    assert dt.datetime.fromtimestamp(before, dt.UTC).hour == 8  # the 28th, winter


def test_a_tick_found_on_time_runs_and_the_next_one_is_after_now() -> None:
    timing = policy.timing(every=HOUR)
    decision = policy.fire(timing, next_at=HOUR, now=HOUR + 1, missed="last")
    assert decision == policy.Fire(tick=HOUR, next_at=2 * HOUR, skipped=0)


def test_missed_last_runs_the_latest_missed_tick_once_and_skips_the_rest() -> None:
    timing = policy.timing(every=HOUR)
    decision = policy.fire(timing, next_at=HOUR, now=5.5 * HOUR, missed="last")
    assert decision == policy.Fire(tick=5 * HOUR, next_at=6 * HOUR, skipped=4)


def test_missed_skip_runs_nothing_when_the_latest_tick_is_over_half_a_period_late() -> None:
    timing = policy.timing(every=HOUR)
    late = policy.fire(timing, next_at=HOUR, now=5.6 * HOUR, missed="skip")
    assert late == policy.Fire(tick=None, next_at=6 * HOUR, skipped=5)
    a_little_late = policy.fire(timing, next_at=HOUR, now=5.4 * HOUR, missed="skip")
    assert a_little_late == policy.Fire(tick=5 * HOUR, next_at=6 * HOUR, skipped=4)


def test_a_missed_cron_tick_is_found_by_searching_back_from_now() -> None:
    timing = policy.timing(cron="*/15 * * * *")
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    decision = policy.fire(timing, next_at=start, now=start + 3 * HOUR + 60, missed="last")
    assert decision.tick == start + 3 * HOUR
    assert decision.next_at == start + 3 * HOUR + 900
    exactly = policy.fire(timing, next_at=start, now=start + 900, missed="last")
    assert exactly.tick == start + 900  # a tick at `now` itself is due


# -- through queues and workers, on each backend --------------------------------------------


def two_queues_and_workers(database: Database, clock: FakeClock) -> tuple[TaskQueue, list[Worker]]:
    """A queue and two workers, each on its own backend object (its own connection)."""
    queue = TaskQueue(database.backend(), clock=clock)
    pair = [
        Worker(database.backend(), clock=clock, worker_id=f"w{i}", rng=random.Random(i))
        for i in (1, 2)
    ]
    return queue, pair


async def test_a_day_of_hourly_ticks_runs_in_a_moment_on_a_fake_clock(
    database: Database, clock: FakeClock
) -> None:
    RUNS.clear()
    async with TaskQueue(database.backend(), clock=clock) as queue:
        declared = await queue.schedule(beat, every=HOUR, args=("hourly",))
        assert declared.next_at == clock.now() + HOUR
        worker = Worker(queue.backend, clock=clock)
        ran = await worker.run_until_idle(until=clock.now() + DAY)
        await worker.stop()
        tasks = await queue.backend.list_tasks()
        [stored] = await queue.schedules()
    assert ran == 24 and RUNS["hourly"] == 24
    assert sorted(t.due_at for t in tasks) == [clock.start + HOUR * k for k in range(1, 25)]
    assert {t.status for t in tasks} == {TaskStatus.SUCCEEDED}
    assert stored.last_tick_at == clock.start + DAY
    assert stored.next_at == clock.start + DAY + HOUR
    assert clock.now() == clock.start + DAY  # not past `until`


async def test_run_until_idle_without_until_runs_due_ticks_and_returns(
    database: Database, clock: FakeClock
) -> None:
    """A schedule always has a next tick: run_until_idle must not wait for it forever."""
    RUNS.clear()
    async with TaskQueue(database.backend(), clock=clock) as queue:
        await queue.schedule(beat, every=60, args=("minutely",))
        worker = Worker(queue.backend, clock=clock)
        assert await worker.run_until_idle() == 0  # nothing due yet
        clock.advance(60)
        assert await worker.run_until_idle() == 1
        await worker.stop()
    assert clock.elapsed() == 60


async def test_two_workers_stepping_one_clock_enqueue_each_tick_once(
    database: Database, clock: FakeClock
) -> None:
    RUNS.clear()
    queue, pair = two_queues_and_workers(database, clock)
    async with queue:
        await queue.schedule(beat, every=HOUR, args=("shared",))
        await queue.schedule(beat, cron="30 * * * *", args=("cron",), name="half-past")
        ran: collections.Counter[str] = collections.Counter()
        for _ in range(2 * 24):  # a day, in half hours
            clock.advance(HOUR / 2)
            done = await asyncio.gather(*(worker.run_once() for worker in pair))
            for worker, n in zip(pair, done, strict=True):
                ran[worker.worker_id] += n
        for worker in pair:
            await worker.stop()
        tasks = await queue.backend.list_tasks()
    assert RUNS == {"shared": 24, "cron": 24}
    by_name = collections.Counter((t.name, t.due_at) for t in tasks)
    assert len(tasks) == 48 and set(by_name.values()) == {1}
    assert sum(ran.values()) == 48


async def test_racing_fires_of_one_tick_store_exactly_one_task(
    database: Database, clock: FakeClock
) -> None:
    """Ten connections fire the same tick at the same moment: the database keeps one."""
    async with TaskQueue(database.backend(), clock=clock) as queue:
        info = await queue.schedule(beat, every=HOUR, args=("race",))
        backends = [database.backend() for _ in range(10)]
        for backend in backends:
            await backend.connect()
        try:

            def fire(i: int) -> ScheduleFire:
                task = NewTask(f"task-{i}", "beat", info.payload, "queued", info.next_at,
                               clock.now())  # fmt: skip
                return ScheduleFire(info.name, info.next_at, info.next_at + HOUR, clock.now(),
                                    tick_at=info.next_at, task=task)  # fmt: skip

            added = await asyncio.gather(*(b.fire_schedule(fire(i)) for i, b in
                                           enumerate(backends)))  # fmt: skip
            # a late worker that read the old next tick, and one that would record it again
            late = await backends[0].fire_schedule(fire(99))
            again = ScheduleFire(info.name, info.next_at + HOUR, info.next_at + 2 * HOUR,
                                 clock.now(), tick_at=info.next_at, task=fire(98).task)  # fmt: skip
            recorded_twice = await backends[0].fire_schedule(again)
        finally:
            for backend in backends:
                await backend.close()
        tasks = await queue.backend.list_tasks()
    assert sum(added) == 1 and not late and not recorded_twice
    assert len(tasks) == 1 and tasks[0].due_at == info.next_at


async def test_missed_last_runs_the_latest_tick_after_an_outage(
    database: Database, clock: FakeClock
) -> None:
    RUNS.clear()
    async with TaskQueue(database.backend(), clock=clock) as queue:
        await queue.schedule(beat, every=HOUR, args=("last",))
        await queue.schedule(beat, every=HOUR, args=("skip",), missed="skip", name="skipper")
        clock.advance(5.75 * HOUR)  # no worker ran for hours
        worker = Worker(queue.backend, clock=clock)
        assert await worker.run_until_idle() == 1
        await worker.stop()
        tasks = await queue.backend.list_tasks()
        stored = {s.name: s for s in await queue.schedules()}
    assert RUNS == {"last": 1}
    assert [t.due_at for t in tasks] == [clock.start + 5 * HOUR]
    assert stored["beat"].next_at == stored["skipper"].next_at == clock.start + 6 * HOUR
    assert stored["skipper"].last_tick_at is None


async def test_declaring_again_keeps_the_next_tick_unless_the_timing_changed(
    database: Database, clock: FakeClock
) -> None:
    async with TaskQueue(database.backend(), clock=clock) as queue:
        first = await queue.schedule(beat, every=HOUR, args=("a",))
        clock.advance(600)
        same = await queue.schedule(beat, every=HOUR, args=("b",), missed="skip")
        changed = await queue.schedule(beat, cron="0 0 * * *", args=("b",))
        assert len(await queue.schedules()) == 1
        assert await queue.unschedule("beat") is True
        assert await queue.unschedule("beat") is False
        assert await queue.schedules() == []
    assert same.next_at == first.next_at and same.missed == "skip"
    assert changed.next_at == clock.start + DAY and changed.cron == "0 0 * * *"


async def test_a_ticks_task_carries_the_schedules_options(
    database: Database, clock: FakeClock
) -> None:
    async with TaskQueue(database.backend(), clock=clock) as queue:
        policy_ = RetryPolicy.fixed(1, max_attempts=4)
        await queue.with_options(retry=policy_, priority=5).schedule(beat, every=60,
                                                                     args=("x",))  # fmt: skip
        with pytest.raises(InvalidScheduleError, match="delay= and eta="):
            await queue.with_options(delay=5).schedule(beat, every=60)
        clock.advance(60)
        worker = Worker(queue.backend, clock=clock)
        await worker.run_once()
        await worker.stop()
        [task] = await queue.backend.list_tasks()
    assert (task.priority, task.max_attempts) == (5, 4)


async def test_bad_schedules_are_refused_before_anything_is_stored(
    database: Database, clock: FakeClock
) -> None:
    async with TaskQueue(database.backend(), clock=clock) as queue:
        with pytest.raises(InvalidScheduleError, match="cron expression"):
            await queue.schedule(beat, cron="every monday")
        with pytest.raises(InvalidScheduleError, match="positive"):
            await queue.schedule(beat, every=0)
        with pytest.raises(InvalidScheduleError, match="args= must be a tuple"):
            await queue.schedule(beat, every=1, args="abc")
        with pytest.raises(InvalidScheduleError, match="until="):
            await Worker(queue.backend, clock=clock).run_until_idle(until=dt.datetime(2026, 1, 2))
        assert await queue.schedules() == []


async def test_a_tick_whose_call_cannot_be_prepared_is_skipped_with_its_error_kept(
    database: Database, clock: FakeClock
) -> None:
    """A worker with another signing key cannot verify the schedule's call: it enqueues
    nothing (never an unverified call), moves on, and says why on the schedule."""
    signed = SignedSerializer("k" * 32)
    async with TaskQueue(database.backend(), signed, clock=clock) as queue:
        await queue.schedule(beat, every=60, args=("signed",))
        clock.advance(60)
        stranger = Worker(queue.backend, SignedSerializer("x" * 32), clock=clock)
        assert await stranger.run_once() == 0
        await stranger.stop()
        [stored] = await queue.schedules()
        assert await queue.backend.list_tasks() == []
        assert "SignatureError" in (stored.last_error or "")
        assert stored.next_at == clock.start + 120
        RUNS.clear()
        clock.advance(60)
        friend = Worker(queue.backend, signed, clock=clock)
        assert await friend.run_once() == 1
        await friend.stop()
    assert RUNS == {"signed": 1}


async def test_the_summary_and_its_html_show_the_schedules(
    database: Database, clock: FakeClock
) -> None:
    async with TaskQueue(database.backend(), clock=clock) as queue:
        assert (await queue.summary()).schedules == ()
        await queue.schedule(beat, cron="0 9 * * MON-FRI", tz="Europe/Paris", name="standup")
        summary = await queue.summary()
        table = (await queue.schedules())._repr_html_()
    assert isinstance(summary, QueueSummary) and "schedules=1" in repr(summary)
    assert "standup" in summary._repr_html_() and "cron 0 9 * * MON-FRI (Europe/Paris)" in table
    assert "2026-01-01 08:00:00" in table  # 9:00 in Paris on Thursday 1 January, in UTC


async def test_a_started_worker_enqueues_ticks_as_the_clock_passes_them(
    database: Database, clock: FakeClock
) -> None:
    """The background loop waits for the next tick as for a delayed task."""
    RUNS.clear()
    async with TaskQueue(database.backend(), clock=clock) as queue:
        await queue.schedule(beat, every=HOUR, args=("background",))
        async with Worker(queue.backend, clock=clock):
            for hour in range(1, 4):
                clock.advance(HOUR)

                async def ran(hour: int = hour) -> bool:
                    return RUNS["background"] == hour

                await wait_until(ran, 10, f"tick {hour}")
    assert RUNS["background"] == 3


# -- real processes -------------------------------------------------------------------------


async def test_two_worker_processes_enqueue_each_tick_once(
    database: Database, tmp_path: Path
) -> None:
    """Two `sitq worker` processes on one database race for every tick of four schedules
    (every 0.25 s, until each has ticked ten times): each tick becomes one task, run once."""
    log = tmp_path / "runs.log"
    names = [f"every-{i}" for i in range(4)]
    with workers(database.url, log, tmp_path, 2, "--concurrency", "4"):
        async with TaskQueue(database.url) as queue:
            for name in names:
                named = queue.with_options(name=name)  # each tick's task named after it
                await named.schedule(count, every=0.25, args=(name,), name=name)

            async def enough_ticks() -> bool:
                ran = tally(log, "end")
                return len(ran) == len(names) and min(ran.values()) >= 10

            await wait_until(enough_ticks, 60, "ten ticks of each schedule")
            for name in names:
                await queue.unschedule(name)

            async def all_done() -> bool:
                counts = await queue.counts()
                finished = counts[TaskStatus.SUCCEEDED]
                return finished == sum(counts.values()) == sum(tally(log, "end").values())

            await wait_until(all_done, 30, "every tick's task to finish")
            tasks = await queue.backend.list_tasks()
    ticks = collections.Counter((t.name, t.due_at) for t in tasks)
    assert set(ticks.values()) == {1}  # no tick enqueued twice
    per_schedule = collections.Counter(t.name for t in tasks)
    assert tally(log, "start") == per_schedule  # each tick's task ran once
    assert min(per_schedule.values()) >= 10


# -- the command line -----------------------------------------------------------------------


async def test_sitq_schedules_and_status_list_the_schedules_with_their_next_tick(
    database: Database, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    async with TaskQueue(database.backend(), clock=clock) as queue:
        await queue.schedule(beat, every=HOUR, args=("cli",), name="hourly")
        await queue.schedule(beat, cron="0 9 * * *", tz="Europe/Paris", name="daily\x1b[31m")

    def sitq(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = await asyncio.to_thread(sitq, "schedules", database.url)
    assert (code, err) == (0, "")
    daily, hourly = (line.split("\t") for line in out.splitlines())
    assert hourly == ["hourly", "beat", "every 3600s", "missed=last", "2026-01-01T01:00:00Z",
                      "", ""]  # fmt: skip
    assert daily[0] == "daily\\x1b[31m"  # stored text never sends escapes to the terminal
    assert daily[2:5] == ["cron 0 9 * * * (Europe/Paris)", "missed=last", "2026-01-01T08:00:00Z"]
    code, out, _ = await asyncio.to_thread(sitq, "schedules", database.url, "--json")
    listed = json.loads(out)
    assert [s["name"] for s in listed] == ["daily\x1b[31m", "hourly"]
    assert listed[1]["every"] == HOUR and listed[1]["next_tick"] == "2026-01-01T01:00:00Z"
    code, out, _ = await asyncio.to_thread(sitq, "status", database.url)
    assert code == 0 and "2 schedules:" in out
    assert "  hourly: every 3600s, next tick 2026-01-01T01:00:00Z" in out.splitlines()
    code, out, _ = await asyncio.to_thread(sitq, "status", database.url, "--json")
    assert set(json.loads(out)) == {str(s) for s in TaskStatus}  # the counts, as before


def test_sitq_schedules_on_a_queue_without_any(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def create() -> None:
        async with TaskQueue(str(db_path)):
            pass

    asyncio.run(create())
    assert main(["schedules", str(db_path)]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == ("", "no schedules\n")


def test_a_sync_queue_schedules_and_its_worker_runs_a_day_of_ticks(db_path: Path) -> None:
    RUNS.clear()
    clock = FakeClock()
    with SyncTaskQueue(SQLiteBackend(db_path), clock=clock) as queue:
        queue.with_options(priority=2).schedule(beat, cron="0 */6 * * *", args=("sync",))
        worker = queue.worker()
        assert worker.run_until_idle(until=clock.now() + DAY) == 4
        [stored] = queue.schedules()
        assert queue.unschedule(stored.name)
    assert RUNS == {"sync": 4} and stored.priority == 2


def test_a_file_made_before_schedules_gains_their_tables(db_path: Path) -> None:
    """A queue file of schema 3 (no schedules) is upgraded when a queue opens it; read-only,
    it is left as it is and lists no schedules."""

    async def open_and_schedule() -> list[str]:
        async with TaskQueue(str(db_path)) as queue:
            await queue.schedule(beat, every=60, args=("old",))
            return [s.name for s in await queue.schedules()]

    async def make_the_file() -> None:
        async with TaskQueue(str(db_path)):
            pass

    asyncio.run(make_the_file())
    conn = sqlite3.connect(db_path)
    conn.executescript(
        "DROP TABLE sitq_schedules; DROP TABLE sitq_schedule_ticks;"
        "UPDATE sitq_meta SET value = '3' WHERE key = 'schema_version';"
    )
    conn.close()
    assert main(["schedules", str(db_path)]) == 0  # read-only: no table, no schedules
    assert asyncio.run(open_and_schedule()) == ["beat"]


async def test_a_postgres_schema_without_the_schedule_tables_lists_none(tmp_path: Path) -> None:
    """As `sitq status` reads a schema an older sitq made (before it is upgraded)."""
    import asyncpg

    database = make_database("postgres", tmp_path)
    try:
        async with TaskQueue(database.url) as queue:
            admin = await asyncpg.connect(POSTGRES_URL)
            try:
                await admin.execute(f'DROP TABLE "{database.schema}".sitq_schedules')
            finally:
                await admin.close()
            assert await queue.schedules() == []
    finally:
        await discard(database)


async def test_a_unique_key_on_a_schedule_is_refused_not_dropped(tmp_path: Path) -> None:
    """Unique keys and schedules met at a merge: a key the ticks would not carry is an error."""
    async with TaskQueue(str(tmp_path / "q.db")) as queue:
        with pytest.raises(InvalidScheduleError, match="unique_key"):
            await queue.with_options(unique_key="k").schedule(beat, every=60)
        assert await queue.schedules() == []


# -- when a worker looks at the schedules ---------------------------------------------------

DECLARE_ELSEWHERE = """
import asyncio, sys
from sitq import FakeClock, SQLiteBackend, TaskQueue
from reliability_tasks import long_async

async def main():
    async with TaskQueue(SQLiteBackend(sys.argv[1]), clock=FakeClock()) as queue:
        await queue.schedule(long_async, every=0.1, args=("elsewhere", 0), name="elsewhere")

asyncio.run(main())
"""


@pytest.mark.sqlite_only
async def test_a_worker_looks_at_the_schedules_only_when_a_tick_may_be_due(
    db_path: Path, clock: FakeClock
) -> None:
    """`ScheduleKeeper.look_at`: no read of the schedules in a `run_once` when no tick can
    be due; a schedule declared in this process (here through another backend object on
    the same file) is seen at the next `run_once`; one declared by another process within
    `look_every` (the worker's poll interval) of the worker's clock."""
    from trip_counting import counting_trips

    worker_backend = SQLiteBackend(db_path, poll_interval=0.5)
    worker = Worker(worker_backend, clock=clock)
    assert await worker.run_once() == 0  # the first turn looks: there is nothing
    with counting_trips(worker_backend) as trips:
        assert await worker.run_once() == 0
    assert trips.count == 1  # the claim alone: no look at the schedules

    async with TaskQueue(SQLiteBackend(db_path), clock=clock) as queue:
        await queue.schedule(beat, every=0.1, args=("here",), name="here")
        clock.advance(0.1)  # less than look_every: only the declaration here makes it look
        assert await worker.run_once() == 1
        await queue.unschedule("here")
    assert await worker.run_once() == 0  # it looks (a schedule was removed here): none
    script = DECLARE_ELSEWHERE.replace("FakeClock()", f"FakeClock({clock.now()!r})")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    declared = subprocess.run([sys.executable, "-c", script, str(db_path)], env=env, timeout=60)
    assert declared.returncode == 0
    clock.advance(0.1)  # its tick is due, but this worker looked less than 0.5 s ago
    assert await worker.run_once() == 0
    clock.advance(0.4)  # look_every since its last look: it looks, and runs the tick
    assert await worker.run_once() == 1
    await worker.stop()

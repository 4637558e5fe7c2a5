"""Claiming ahead, tested with real worker processes, real signals and real databases.

A worker whose tasks are short claims some ahead and keeps them in hand (`sitq.engine.pipeline`).
What must hold whatever happens to it:

(a) it never holds more than 2 x concurrency leased rows, whatever mix of claims its main
    loop and its settle path send (counted in the database during a busy drain);
(b) killed (SIGKILL) while holding tasks it never started, those tasks cost no attempt and
    leave no WorkerLost record: the next worker runs them as attempt 1;
(c) a task in hand does not wait behind long tasks while another worker could run it;
(d) stopped (SIGSTOP) past its lease while another worker takes its tasks over, then
    resumed (SIGCONT), it starts none of the tasks it held: their lease is gone.

Each runs on SQLite and on PostgreSQL, and prints its figures. Executions are counted by
the tasks themselves, in a log file the worker processes append to.
"""

from __future__ import annotations

import collections
import platform
import signal
import sys
from pathlib import Path

import pytest
import reliability_tasks as rt
from backends import Database
from test_reliability import is_stopped, outside_transactions, report
from worker_processes import WorkerProcess, wait_until, workers

from sitq import TaskInfo, TaskQueue, TaskStatus, call

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals and /proc (Linux)"),
]

CONCURRENCY = 10


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "executions.log"


async def leased_to_any(queue: TaskQueue) -> list[TaskInfo]:
    """The rows the database has leased to some worker now."""
    return await queue.backend.list_tasks([TaskStatus.RUNNING])


async def leased_to(queue: TaskQueue, worker_id: str) -> list[TaskInfo]:
    """The rows the database has leased to this worker now."""
    return [t for t in await leased_to_any(queue) if t.worker_id == worker_id]


#: epoll_wait and epoll_pwait, by machine: the system calls of an event loop with nothing to do.
EPOLL_WAITS = {"x86_64": {"232", "281"}, "aarch64": {"22"}}


def waits_idle(pid: int) -> bool:
    """True if the process's main thread is blocked in epoll_wait with a timeout other than
    0: its event loop had no callback ready, so no task was spawned and not yet begun."""
    fields = Path(f"/proc/{pid}/syscall").read_text().split()
    calls = EPOLL_WAITS.get(platform.machine(), set())
    return len(fields) > 4 and fields[0] in calls and int(fields[4], 16) != 0


async def freeze_holding_ahead(
    proc: WorkerProcess, queue: TaskQueue, database: Database, log: Path, *, idle: bool = False
) -> list[TaskInfo]:
    """SIGSTOP the worker at a moment it holds more rows than it can run (some claimed
    ahead), outside any transaction (and, with `idle`, with its event loop idle); return
    the rows leased to it then. Between tries it runs on until a few more tasks end."""
    for _ in range(200):
        proc.send(signal.SIGSTOP)

        async def stopped() -> bool:
            return is_stopped(proc.pid)

        await wait_until(stopped, 5, "the worker to stop")
        if await outside_transactions(database) and (not idle or waits_idle(proc.pid)):
            held = await leased_to(queue, proc.worker_id)
            if len(held) > CONCURRENCY:
                return held
        ends = sum(rt.tally(log, "end").values())
        proc.send(signal.SIGCONT)

        async def ran_on(before: int = ends) -> bool:
            return sum(rt.tally(log, "end").values()) >= before + 5

        await wait_until(ran_on, 20, "the worker to run on")
    raise AssertionError("never caught the worker holding more rows than it runs")


@pytest.mark.timeout(120)
async def test_a_worker_never_holds_more_than_twice_its_concurrency(
    database: Database, log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given two workers at concurrency 10 draining 3000 short tasks, when the rows leased
    to each are counted in the database all along, then no worker ever holds more than
    20, and every task succeeds once."""
    n_tasks, options = 3000, ("--concurrency", str(CONCURRENCY))
    most: collections.Counter[str] = collections.Counter()
    looks = 0
    with workers(database.url, log, tmp_path, 2, *options) as procs:
        async with TaskQueue(database.backend()) as queue:
            ids = await queue.enqueue_many([call(rt.count, f"t{i}") for i in range(n_tasks)])

            async def drained() -> bool:
                nonlocal looks
                looks += 1
                leased = collections.Counter(t.worker_id for t in await leased_to_any(queue))
                for worker_id, n in leased.items():
                    most[worker_id] = max(most[worker_id], n)
                return sum(rt.tally(log, "end").values()) >= n_tasks

            await wait_until(drained, 90, "the drain", step=0.002)
            results = await queue.gather(ids, timeout=30)
        for proc in procs:
            proc.send(signal.SIGTERM)
        codes = [proc.wait(20) for proc in procs]

    report(capsys, "claim-ahead a", tasks=n_tasks, concurrency=CONCURRENCY, looks=looks,
           most_rows_held=sorted(most.values()))  # fmt: skip
    assert all(r is not None and r.is_success() for r in results)
    assert rt.tally(log, "start") == collections.Counter(f"t{i}" for i in range(n_tasks))
    assert max(most.values()) <= 2 * CONCURRENCY, most
    assert codes == [0, 0]


@pytest.mark.timeout(120)
async def test_b_tasks_a_killed_worker_held_unstarted_cost_no_attempt(
    database: Database, log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a worker draining short tasks (3 attempts each), when it is killed (SIGKILL)
    holding more rows than it runs, then another worker completes every task; only the
    tasks it had started show a WorkerLost attempt (at most concurrency of them), and
    those it held unstarted end with attempts == 1 and no lost attempt."""
    n_tasks = 3000
    async with TaskQueue(database.backend()) as queue:
        ids = await queue.enqueue_many(
            [call(rt.count_again_if_lost, f"t{i}") for i in range(n_tasks)]
        )
        with workers(database.url, log, tmp_path, 1, "--concurrency", str(CONCURRENCY),
                     "--lease", "1") as [victim]:  # fmt: skip

            async def warmed_up() -> bool:  # short tasks have run: it claims ahead
                return sum(rt.tally(log, "end").values()) >= 200

            await wait_until(warmed_up, 30, "200 tasks to end")
            held = await freeze_holding_ahead(victim, queue, database, log)
            victim.send(signal.SIGKILL)
            assert victim.wait(10) == -signal.SIGKILL
        unstarted = {t.task_id for t in held if t.started_at is None}
        started = {t.task_id for t in held} - unstarted
        with workers(database.url, log, tmp_path, 1, "--concurrency", str(CONCURRENCY)):
            results = await queue.gather(ids, timeout=60)
        history = await queue.history()

    lost = {a.task_id for a in history if a.outcome == "worker_lost"}
    by_id = {r.task_id: r for r in results if r is not None}
    report(capsys, "claim-ahead b", tasks=n_tasks, held_at_kill=len(held),
           held_unstarted=len(unstarted), worker_lost_records=len(lost))  # fmt: skip
    assert len(by_id) == n_tasks and all(r.is_success() for r in by_id.values())
    assert lost == started and len(lost) <= CONCURRENCY  # only tasks it had started
    assert unstarted  # it held more rows than slots: some were claimed ahead
    assert [by_id[i].attempts for i in sorted(unstarted)] == [1] * len(unstarted)
    assert all(by_id[i].attempts == 2 for i in started)


@pytest.mark.timeout(120)
async def test_c_tasks_in_hand_do_not_wait_behind_long_tasks_while_another_worker_idles(
    database: Database, log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a worker of 2 slots that has run short tasks (so it claims ahead), when two
    long tasks and six short ones are enqueued at once and it takes the long ones, then a
    second worker started after runs all six short ones while the long ones still run."""
    release = tmp_path / "release"
    async with TaskQueue(database.backend()) as queue:
        with workers(database.url, log, tmp_path, 1, "--concurrency", "2") as [first]:
            warm = await queue.enqueue_many([call(rt.count, f"warm{i}") for i in range(50)])
            await queue.gather(warm, timeout=30)
            ids = await queue.enqueue_many(
                [call(rt.wait_for_file, f"long{i}", str(release)) for i in range(2)]
                + [call(rt.count, f"short{i}") for i in range(6)]
            )

            async def longs_run() -> bool:
                return sum(k.startswith("long") for k in rt.tally(log, "start")) == 2

            await wait_until(longs_run, 20, "the long tasks to start")
            with workers(database.url, log, tmp_path, 1, "--concurrency", "2"):
                shorts = await queue.gather(ids[2:], timeout=20)
                assert not release.exists()  # the long ones were running all along
                release.touch()
                longs = await queue.gather(ids[:2], timeout=20)
        history = await queue.history()

    workers_of = {a.task_id: a.worker_id for a in history}
    report(capsys, "claim-ahead c", shorts_done=sum(r is not None for r in shorts),
           shorts_by_the_second=sum(workers_of[i] != first.worker_id for i in ids[2:]))  # fmt: skip
    assert all(r is not None and r.is_success() for r in shorts + longs)
    assert all(workers_of[i] == first.worker_id for i in ids[:2])
    assert all(r.attempts == 1 for r in shorts if r is not None)  # handed back, not spent


@pytest.mark.skipif(platform.machine() not in EPOLL_WAITS, reason="reads epoll's syscall number")
@pytest.mark.timeout(120)
async def test_d_a_resumed_worker_starts_none_of_the_tasks_whose_lease_it_lost(
    database: Database, log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a worker (lease 1 s) draining short tasks, stopped (SIGSTOP) while it holds
    more rows than it runs, when a second worker takes all of them over and the first is
    resumed (SIGCONT), then the first starts none of the tasks it held: every task
    succeeds, and none of those runs again in the resumed worker."""
    n_tasks = 3000
    async with TaskQueue(database.backend()) as queue:
        ids = await queue.enqueue_many(
            [call(rt.count_again_if_lost, f"t{i}") for i in range(n_tasks)]
        )
        with workers(database.url, log, tmp_path, 1, "--concurrency", str(CONCURRENCY),
                     "--lease", "1") as [paused]:  # fmt: skip

            async def warmed_up() -> bool:
                return sum(rt.tally(log, "end").values()) >= 200

            await wait_until(warmed_up, 30, "200 tasks to end")
            held = await freeze_holding_ahead(paused, queue, database, log, idle=True)
            held_ids = {t.task_id for t in held}
            with workers(database.url, log, tmp_path, 1, "--concurrency", str(CONCURRENCY)):

                async def taken_over() -> bool:
                    infos = [await queue.get_task(i) for i in held_ids]
                    return all(i.worker_id != paused.worker_id for i in infos)

                await wait_until(taken_over, 30, "the held tasks to be taken over")
                resumed_at = len(rt.read_log(log))
                paused.send(signal.SIGCONT)
                results = await queue.gather(ids, timeout=60)
                paused.send(signal.SIGTERM)
                assert paused.wait(20) == 0
    keys = {f"t{ids.index(i)}" for i in held_ids}  # the key each task logs
    after = rt.read_log(log)[resumed_at:]
    again = [key for event, key, pid in after if event == "start" and pid == paused.pid
             and key in keys]  # fmt: skip
    report(capsys, "claim-ahead d", tasks=n_tasks, held_when_stopped=len(held),
           held_unstarted=sum(t.started_at is None for t in held),
           started_again_by_the_resumed=len(again))  # fmt: skip
    assert all(r is not None and r.is_success() for r in results)
    assert again == []

"""PostgresBackend against a real server: every protocol operation, then the engine on it.

Each test gets a fresh schema, dropped afterwards. With no server reachable the PostgreSQL
tests skip, saying how to enable them (see tests/backends.py). The second half runs
existing engine tests (TaskQueue + Worker, FakeClock) unchanged on PostgreSQL: they are
imported here, and this module's `backend` fixture is a PostgresBackend.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from backends import POSTGRES_URL, discard, make_database
from worker_processes import wait_until

from sitq import FakeClock, RetryPolicy, SQLiteBackend, TaskQueue, TaskStatus, Worker
from sitq.backends import open_backend
from sitq.backends.base import ClaimedTask, ClaimRequest, NewTask, Settlement
from sitq.backends.postgres import PostgresBackend
from sitq.backends.postgres.sql import SCHEMA_VERSION
from sitq.errors import BackendError, InvalidOptionError, QueueClosedError, SchemaVersionError
from sitq.task import Attempt, LostAttempt

T0 = 1_000.0  # a fixed "now" for protocol tests: the backend never reads a clock itself
LEASE = 30.0


@pytest.fixture
async def pg_url(tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a fresh schema (the test is skipped when no server answers)."""
    database = make_database("postgres", tmp_path)
    yield database.url
    await discard(database)


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[PostgresBackend]:
    backend = open_backend(pg_url)
    assert isinstance(backend, PostgresBackend)
    await backend.connect()
    yield backend
    await backend.close()


@pytest.fixture
async def backend(pg: PostgresBackend) -> PostgresBackend:
    """Overrides conftest's SQLite backend: the imported engine tests run on PostgreSQL."""
    return pg


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    """A plain connection of the test's own, to look at (and disturb) the server."""
    conn = await asyncpg.connect(POSTGRES_URL)
    yield conn
    await conn.close()


def new(task_id: str, *, due: float = T0, priority: int = 0, budget: int | None = None) -> NewTask:
    status = TaskStatus.SCHEDULED if due > T0 else TaskStatus.QUEUED
    return NewTask(task_id, "job", b"payload-" + task_id.encode(), status, due, T0, priority,
                   budget, None if budget is None else f"{budget} attempts")  # fmt: skip


def record(task: ClaimedTask, outcome: str, finished: float, next_delay: float | None = None):
    return Attempt(task.task_id, task.name, task.attempt, "w1", task.scheduled_for,
                   task.claimed_at, finished, outcome, next_delay=next_delay)  # fmt: skip


async def claim_one(backend: PostgresBackend, now: float = T0, worker: str = "w1") -> ClaimedTask:
    [claimed] = await backend.claim(worker, 1, now, LEASE)
    return claimed


# -- set-up: schema, version, reference counting --------------------------------------------


async def test_connect_creates_a_versioned_schema_of_its_own(
    pg: PostgresBackend, admin: asyncpg.Connection
) -> None:
    tables = await admin.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 "
        "ORDER BY table_name", pg.schema,
    )  # fmt: skip
    assert [t[0] for t in tables] == [
        "sitq_attempts",
        "sitq_dependencies",
        "sitq_meta",
        "sitq_rate_starts",
        "sitq_schedule_ticks",
        "sitq_schedules",
        "sitq_tasks",
    ]
    version = await admin.fetchval(
        f"SELECT value FROM \"{pg.schema}\".sitq_meta WHERE key = 'schema_version'"
    )
    assert version == str(SCHEMA_VERSION)
    assert await admin.fetchval("SELECT to_regclass('public.sitq_tasks')") is None


async def test_each_connect_needs_one_close(pg_url: str) -> None:
    backend = open_backend(pg_url)
    await backend.connect()
    await backend.connect()
    await backend.close()
    assert backend.is_connected and await backend.next_due_at() is None
    await backend.close()
    assert not backend.is_connected
    with pytest.raises(QueueClosedError):
        await backend.counts()


async def test_many_processes_creating_one_schema_at_once_all_succeed(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Six starters at once: one creates the schema, the others find it made (and run no
    DDL, which would lock tables under workers that already run)."""
    backends = [open_backend(pg_url) for _ in range(6)]
    with caplog.at_level("INFO", logger="sitq.backends.postgres"):
        await asyncio.gather(*(b.connect() for b in backends))
    assert sum("creating sitq schema" in r.getMessage() for r in caplog.records) == 1
    await backends[0].add_tasks([new("t1")])
    assert [(await b.counts())[TaskStatus.QUEUED] for b in backends] == [1] * 6
    await asyncio.gather(*(b.close() for b in backends))


async def test_connecting_beside_a_busy_writer_takes_no_table_lock(
    pg: PostgresBackend, pg_url: str
) -> None:
    """A worker starting while others write must not run DDL (CREATE INDEX IF NOT EXISTS
    takes a SHARE lock on the table and can deadlock with a running claim)."""
    writer = await asyncpg.connect(POSTGRES_URL)
    busy = writer.transaction()
    await busy.start()
    await writer.execute(  # holds ROW EXCLUSIVE on sitq_tasks until rollback
        f'UPDATE "{pg.schema}".sitq_tasks SET priority = priority WHERE false'
    )
    late = open_backend(pg_url)
    try:
        await asyncio.wait_for(late.connect(), 5)
        assert await late.counts() == await pg.counts()
    finally:
        await busy.rollback()
        await writer.close()
        await late.close()


async def test_a_newer_schema_version_is_refused(
    pg: PostgresBackend, pg_url: str, admin: asyncpg.Connection
) -> None:
    await admin.execute(
        f"UPDATE \"{pg.schema}\".sitq_meta SET value = '{SCHEMA_VERSION + 1}' "
        "WHERE key = 'schema_version'"
    )
    with pytest.raises(SchemaVersionError, match="upgrade sitq"):
        await open_backend(pg_url).connect()


async def test_an_unreachable_server_is_a_clear_error() -> None:
    backend = PostgresBackend("postgresql://postgres@127.0.0.1:1/test", connect_timeout=2)
    with pytest.raises(BackendError, match="cannot connect"):
        await backend.connect()
    assert not backend.is_connected


def test_options_are_checked() -> None:
    with pytest.raises(InvalidOptionError, match="schema"):
        PostgresBackend(POSTGRES_URL, schema="bad; DROP TABLE x")
    with pytest.raises(InvalidOptionError, match="pool_size"):
        PostgresBackend(POSTGRES_URL, pool_size=0)
    with pytest.raises(InvalidOptionError, match="postgresql://"):
        PostgresBackend("mysql://x/y")
    assert "secret" not in repr(PostgresBackend("postgresql://u:secret@h/db"))


# -- choosing a backend from a URL ---------------------------------------------------------


def test_sqlite_urls_and_plain_paths_open_sqlite(tmp_path: Path) -> None:
    cases = {
        "tasks.db": "tasks.db",
        str(tmp_path / "q.db"): str(tmp_path / "q.db"),
        "sqlite:///tasks.db": "tasks.db",
        f"sqlite:///{tmp_path}/q.db": f"{str(tmp_path)[1:]}/q.db",  # relative: 3 slashes
        f"sqlite:////{str(tmp_path)[1:]}/q.db": f"{tmp_path}/q.db",  # absolute: 4 slashes
        "sqlite:///:memory:": ":memory:",
    }
    for url, path in cases.items():
        backend = open_backend(url)
        assert isinstance(backend, SQLiteBackend) and backend.path == path, url
    assert isinstance(open_backend(tmp_path / "q.db"), SQLiteBackend)


def test_postgres_urls_open_postgres_with_an_optional_schema() -> None:
    plain = open_backend("postgresql://u@h:5432/db")
    named = open_backend("postgres://u@h/db?schema=team_a&sslmode=disable")
    assert isinstance(plain, PostgresBackend) and plain.schema == "sitq"
    assert isinstance(named, PostgresBackend) and named.schema == "team_a"
    assert named.dsn == "postgres://u@h/db?sslmode=disable"


def test_other_schemes_are_refused_naming_the_supported_ones() -> None:
    for url in ("mysql://h/db", "redis://h", "sqlite://tasks.db"):
        with pytest.raises(InvalidOptionError, match="sqlite:///") as caught:
            open_backend(url)
        assert url in str(caught.value)
    with pytest.raises(InvalidOptionError, match=r"postgresql://"):
        open_backend("mysql://h/db")


# -- add and claim ---------------------------------------------------------------------------


async def test_add_tasks_is_all_or_nothing(pg: PostgresBackend) -> None:
    await pg.add_tasks([new("a")])
    with pytest.raises(asyncpg.UniqueViolationError):
        await pg.add_tasks([new("b"), new("c"), new("a")])
    assert [t.task_id for t in await pg.list_tasks()] == ["a"]


async def test_claim_takes_due_tasks_by_priority_then_due_time_then_order(
    pg: PostgresBackend,
) -> None:
    await pg.add_tasks([new("low"), new("high", priority=5), new("later", due=T0 + 10),
                        new("low2"), new("high2", priority=5)])  # fmt: skip
    claimed = await pg.claim("w1", 10, T0, LEASE, default_budget=(3, "three tries"))
    assert [c.task_id for c in claimed] == ["high", "high2", "low", "low2"]
    first = claimed[0]
    assert first == ClaimedTask("high", "job", b"payload-high", 1, 1, 1, T0, T0, T0, None,
                                None, False, 3)  # fmt: skip
    info = (await pg.get_tasks(["high"]))["high"]
    assert (info.status, info.worker_id, info.max_attempts, info.retry_policy) == (
        TaskStatus.RUNNING, "w1", 3, "three tries",
    )  # fmt: skip
    assert await pg.claim("w2", 10, T0 + 9, LEASE) == []  # "later" is not due yet
    assert [c.task_id for c in await pg.claim("w2", 10, T0 + 10, LEASE)] == ["later"]


async def test_claim_reads_now_when_it_runs(pg: PostgresBackend) -> None:
    await pg.add_tasks([new("t")])
    reads: list[float] = []

    def now() -> float:
        reads.append(T0 + 5)
        return T0 + 5

    [claimed] = await pg.claim("w1", 1, now, LEASE)
    assert reads == [T0 + 5] and claimed.claimed_at == T0 + 5
    assert (await pg.get_tasks(["t"]))["t"].started_at == T0 + 5


async def test_a_task_budget_is_kept_over_the_default(pg: PostgresBackend) -> None:
    await pg.add_tasks([new("t", budget=7)])
    [claimed] = await pg.claim("w1", 1, T0, LEASE, default_budget=(3, "three"))
    assert claimed.max_attempts == 7


async def test_concurrent_claimers_never_share_a_task(pg_url: str) -> None:
    backends = [open_backend(pg_url) for _ in range(4)]
    for b in backends:
        await b.connect()
    await backends[0].add_tasks([new(f"t{i}") for i in range(300)])

    async def drain(backend, name: str) -> list[str]:
        taken: list[str] = []
        while batch := await backend.claim(name, 7, T0, LEASE):
            taken += [c.task_id for c in batch]
        return taken

    results = await asyncio.gather(*(drain(b, f"w{i}") for i, b in enumerate(backends)))
    everything = [task_id for taken in results for task_id in taken]
    assert sorted(everything) == sorted(f"t{i}" for i in range(300))  # each exactly once
    for b in backends:
        await b.close()


async def test_an_expired_lease_is_taken_over_and_its_attempt_recorded(
    pg: PostgresBackend,
) -> None:
    await pg.add_tasks([new("t"), new("u")])
    first = await pg.claim("w1", 2, T0, LEASE)
    assert await pg.cancel("t", T0 + 1) is TaskStatus.RUNNING  # a cancel request is pending
    later = T0 + LEASE + 1
    assert await pg.claim("w1", 2, later, LEASE, held=["t", "u"]) == []  # its own: not taken
    taken = await pg.claim("w2", 1, later, LEASE)
    assert [c.task_id for c in taken] == ["t"]
    [c] = taken
    assert (c.attempt, c.tries, c.token, c.scheduled_for, c.claimed_at) == (
        2, 2, first[0].token + 1, T0 + LEASE, later,
    )  # fmt: skip
    assert c.lost_attempt == LostAttempt("w1", T0, T0)
    assert c.cancel_requested  # survives the crash
    [lost] = await pg.attempts("t")
    assert lost == Attempt("t", "job", 1, "w1", T0, T0, T0 + LEASE, "worker_lost",
                           "WorkerLost", "worker w1 stopped renewing its lease", None)  # fmt: skip
    info = (await pg.get_tasks(["t"]))["t"]
    assert (info.worker_id, info.attempts, info.status) == ("w2", 2, TaskStatus.RUNNING)


# -- settle, renew, progress --------------------------------------------------------------


async def test_settle_is_fenced_by_the_lease_token(pg: PostgresBackend) -> None:
    await pg.add_tasks([new("t")])
    stale = await claim_one(pg)
    owner = await claim_one(pg, T0 + LEASE + 1, "w2")
    late = Settlement("t", stale.token, TaskStatus.SUCCEEDED, T0 + 40, result=b"stale",
                      attempt=record(stale, "succeeded", T0 + 40))  # fmt: skip
    good = Settlement("t", owner.token, TaskStatus.SUCCEEDED, T0 + 41, result=b"fresh",
                      attempt=record(owner, "succeeded", T0 + 41))  # fmt: skip
    assert await pg.settle([late, good]) == [False, True]
    assert await pg.settle([good]) == [False]  # settled already: never twice
    info = (await pg.get_tasks(["t"]))["t"]
    assert (info.status, info.result, info.finished_at) == (TaskStatus.SUCCEEDED, b"fresh", T0 + 41)
    assert [a.outcome for a in await pg.attempts("t")] == ["worker_lost", "succeeded"]


async def test_settle_stores_retries_refunds_and_keeps_errors_like_sqlite(
    pg: PostgresBackend,
) -> None:
    await pg.add_tasks([new("t")])
    c1 = await claim_one(pg)
    retry = Settlement("t", c1.token, TaskStatus.RETRYING, T0 + 1, due_at=T0 + 6,
                       error="boom", error_type="ValueError", traceback="tb",
                       attempt=record(c1, "retrying", T0 + 1, next_delay=5.0))  # fmt: skip
    assert await pg.settle([retry]) == [True]
    info = (await pg.get_tasks(["t"]))["t"]
    assert (info.status, info.due_at, info.finished_at, info.error) == (
        TaskStatus.RETRYING, T0 + 6, None, "boom",
    )  # fmt: skip
    c2 = await claim_one(pg, T0 + 6)
    assert (c2.attempt, c2.last_delay) == (2, 5.0)
    # A hand-back: no attempt used, no record, the last error and delay kept.
    back = Settlement("t", c2.token, TaskStatus.QUEUED, T0 + 7, due_at=T0 + 7,
                      refund_attempt=True)  # fmt: skip
    assert await pg.settle([back]) == [True]
    info = (await pg.get_tasks(["t"]))["t"]
    assert (info.status, info.attempts, info.error, info.error_type, info.traceback) == (
        TaskStatus.QUEUED, 1, "boom", "ValueError", "tb",
    )  # fmt: skip
    c3 = await claim_one(pg, T0 + 7)
    assert (c3.attempt, c3.last_delay) == (2, 5.0)
    fail = Settlement("t", c3.token, TaskStatus.FAILED, T0 + 8, error="again",
                      error_type="KeyError", attempt=record(c3, "failed", T0 + 8))  # fmt: skip
    assert await pg.settle([fail]) == [True]
    info = (await pg.get_tasks(["t"]))["t"]
    assert (info.status, info.finished_at, info.error_type) == (
        TaskStatus.FAILED, T0 + 8, "KeyError",
    )  # fmt: skip
    assert [a.outcome for a in await pg.attempts("t")] == ["retrying", "failed"]


async def test_one_task_settled_twice_in_a_batch_is_accepted_once(pg: PostgresBackend) -> None:
    await pg.add_tasks([new("t"), new("u")])
    a, b = await pg.claim("w1", 2, T0, LEASE)
    done = [Settlement(c.task_id, c.token, TaskStatus.SUCCEEDED, T0 + 1,
                       attempt=record(c, "succeeded", T0 + 1)) for c in (a, b, a)]  # fmt: skip
    assert await pg.settle(done) == [True, True, False]
    assert len(await pg.attempts()) == 2


def done(task: ClaimedTask, at: float) -> Settlement:
    return Settlement(task.task_id, task.token, TaskStatus.SUCCEEDED, at,
                      attempt=record(task, "succeeded", at))  # fmt: skip


async def test_a_settle_and_the_next_claim_go_as_one_statement_fenced_apart(
    pg: PostgresBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """A busy worker's trip: the outcomes and its next claim in one statement. The fencing
    token still refuses a stale outcome, and the claim half never takes over a task the
    settle half stores, even one whose lease has run out (both halves see one snapshot)."""
    await pg.add_tasks([new("t"), new("u"), new("v", priority=-1)])
    stale, ours = await claim_one(pg), await claim_one(pg, T0 + 1)
    [owner] = await pg.claim("w2", 1, T0 + LEASE + 0.5, LEASE)  # t's lease ran out first
    assert owner.task_id == stale.task_id == "t"
    later = T0 + LEASE + 2  # u's has run out too, but w1 stores u's outcome with its token
    outcomes = [done(c, later) for c in (stale, ours)]
    request = ClaimRequest(worker_id="w1", limit=3, now=later, lease_seconds=LEASE)
    accepted, claimed = await pg.settle_and_claim(outcomes, request)
    assert accepted == [False, True]  # t is w2's now
    assert [c.task_id for c in claimed] == ["v"]  # u was settled, not taken over
    infos = await pg.get_tasks(["t", "u", "v"])
    assert [infos[i].status for i in "tuv"] == [TaskStatus.RUNNING, TaskStatus.SUCCEEDED,
                                                TaskStatus.RUNNING]  # fmt: skip
    assert [a.outcome for a in await pg.attempts("u")] == ["succeeded"]
    assert "settling alone" not in caplog.text  # the one statement, not the fallback


async def test_renew_extends_held_leases_and_names_the_lost_ones(pg: PostgresBackend) -> None:
    await pg.add_tasks([new("kept"), new("taken"), new("cancelled"), new("done")])
    claimed = {c.task_id: c for c in await pg.claim("w1", 4, T0, LEASE)}
    await pg.cancel("cancelled", T0)
    finished = claimed["done"]
    await pg.settle([Settlement("done", finished.token, TaskStatus.SUCCEEDED, T0)])
    leases = [(c.task_id, c.token) for c in claimed.values()]
    stale = [("taken", claimed["taken"].token - 1)]
    lost = await pg.renew_leases(leases[:1] + stale + leases[2:], T0 + 10, LEASE)
    assert lost == {"taken", "cancelled", "done"}
    # "kept" now expires at T0 + 40: not taken over at T0 + 35; the two not renewed are.
    taken = await pg.claim("w2", 4, T0 + 35, LEASE)
    assert sorted(c.task_id for c in taken) == ["cancelled", "taken"]


async def test_progress_is_stored_only_under_the_current_token(pg: PostgresBackend) -> None:
    await pg.add_tasks([new("t")])
    c = await claim_one(pg)
    await pg.set_progress("t", c.token, 0.5, "half")
    await pg.set_progress("t", c.token - 1, 0.9, "stale")
    info = (await pg.get_tasks(["t"]))["t"]
    assert (info.progress, info.progress_message) == (0.5, "half")


# -- cancel, requeue, purge, prune -------------------------------------------------------


async def test_cancel_follows_the_state_module(pg: PostgresBackend) -> None:
    await pg.add_tasks([new("waiting"), new("running")])
    await pg.claim("w1", 1, T0, LEASE)  # "waiting" was enqueued first
    await pg.add_tasks([new("queued")])
    assert await pg.cancel("queued", T0 + 1) is TaskStatus.QUEUED
    assert await pg.cancel("waiting", T0 + 1) is TaskStatus.RUNNING
    assert await pg.cancel("queued", T0 + 2) is TaskStatus.CANCELLED  # nothing more to do
    assert await pg.cancel("nope", T0) is None
    infos = await pg.get_tasks(["queued", "waiting"])
    assert (infos["queued"].status, infos["queued"].finished_at, infos["queued"].error_type) == (
        TaskStatus.CANCELLED, T0 + 1, "Cancelled",
    )  # fmt: skip
    assert infos["waiting"].status is TaskStatus.RUNNING
    [(c)] = await pg.claim("w2", 1, T0 + LEASE + 1, LEASE)
    assert c.task_id == "waiting" and c.cancel_requested


async def test_requeue_gives_a_failed_task_a_fresh_budget(pg: PostgresBackend) -> None:
    await pg.add_tasks([new("t"), new("q")])
    c = await claim_one(pg)
    await pg.settle([Settlement("t", c.token, TaskStatus.FAILED, T0 + 1, error="x",
                                error_type="E", attempt=record(c, "failed", T0 + 1))])  # fmt: skip
    assert await pg.requeue("q", T0 + 2) is TaskStatus.QUEUED  # not requeueable: unchanged
    assert await pg.requeue("t", T0 + 2) is TaskStatus.FAILED
    assert await pg.requeue("missing", T0 + 2) is None
    info = (await pg.get_tasks(["t"]))["t"]
    assert (info.status, info.due_at, info.attempts, info.tries, info.error) == (
        TaskStatus.QUEUED, T0 + 2, 1, 0, None,
    )  # fmt: skip
    again = await claim_one(pg, T0 + 2)
    assert (again.task_id, again.attempt, again.tries) == ("q", 1, 1)
    again = await claim_one(pg, T0 + 2)
    assert (again.task_id, again.attempt, again.tries) == ("t", 2, 1)


async def test_purge_deletes_tasks_but_keeps_history(pg: PostgresBackend) -> None:
    await pg.add_tasks([new("t"), new("q")])
    c = await claim_one(pg)
    await pg.settle([Settlement("t", c.token, TaskStatus.FAILED, T0 + 1,
                                attempt=record(c, "failed", T0 + 1))])  # fmt: skip
    assert await pg.purge([TaskStatus.FAILED]) == 1
    assert await pg.purge([]) == 0
    assert [t.task_id for t in await pg.list_tasks()] == ["q"]
    assert [a.task_id for a in await pg.attempts()] == ["t"]


async def test_prune_deletes_old_finished_tasks_with_their_history(pg: PostgresBackend) -> None:
    await pg.add_tasks([new(f"t{i}") for i in range(5)])
    claimed = await pg.claim("w1", 5, T0, LEASE)
    outcomes = [TaskStatus.SUCCEEDED, TaskStatus.SUCCEEDED, TaskStatus.CANCELLED,
                TaskStatus.FAILED, TaskStatus.SUCCEEDED]  # fmt: skip
    finish = [T0 + 1, T0 + 2, T0 + 3, T0 + 1, T0 + 50]
    await pg.settle([Settlement(c.task_id, c.token, status, at,
                                attempt=record(c, "x", at))
                     for c, status, at in zip(claimed, outcomes, finish, strict=True)])  # fmt: skip
    assert await pg.prune(10, T0 + 20, 2) == 2
    assert await pg.prune(10, T0 + 20, 2) == 1
    assert await pg.prune(10, T0 + 20, 2) == 0
    assert [t.task_id for t in await pg.list_tasks()] == ["t3", "t4"]  # failed stays
    assert [a.task_id for a in await pg.attempts()] == ["t3", "t4"]


# -- reading -------------------------------------------------------------------------------


async def test_reads_list_count_and_find_the_next_due_time(pg: PostgresBackend) -> None:
    assert await pg.next_due_at() is None
    await pg.add_tasks([new("a", due=T0 + 5), new("b"), new("c", due=T0 + 2)])
    assert await pg.next_due_at() == T0
    await pg.claim("w1", 1, T0, LEASE)
    assert await pg.next_due_at() == T0 + 2
    assert [t.task_id for t in await pg.list_tasks()] == ["a", "b", "c"]
    assert [t.task_id for t in await pg.list_tasks([TaskStatus.SCHEDULED], limit=1)] == ["a"]
    assert await pg.list_tasks([]) == []
    counts = await pg.counts()
    assert list(counts) == list(TaskStatus)
    assert (counts[TaskStatus.SCHEDULED], counts[TaskStatus.RUNNING], sum(counts.values())) == (
        2, 1, 3,
    )  # fmt: skip
    assert set(await pg.get_tasks(["a", "zzz"])) == {"a"} and await pg.get_tasks([]) == {}
    assert await pg.attempts() == [] and await pg.attempts("a") == []


async def test_the_next_due_time_a_short_claim_saw_is_forgotten_at_any_change(
    pg_url: str, pg: PostgresBackend
) -> None:
    """A short claim's statement also reads the next due time, which the worker asks next:
    it is the answer until something may have made a task due (here, elsewhere, or in a
    settle that went with the claim), and then the database is asked again."""
    await pg.add_tasks([new("now"), new("late", due=T0 + 50)])
    [running] = await pg.claim("w1", 5, T0, LEASE)
    assert await pg.next_due_at() == T0 + 50
    await pg.claim("w1", 5, T0, LEASE, held=["now"])
    await pg.add_tasks([new("soon", due=T0 + 20)])  # in this process
    assert await pg.next_due_at() == T0 + 20
    await pg.claim("w1", 5, T0, LEASE, held=["now"])
    other = open_backend(pg_url)
    await other.connect()
    try:
        changed = asyncio.create_task(pg.wait_for_change(10))
        await asyncio.sleep(0)
        await other.add_tasks([new("sooner", due=T0 + 10)])  # in another: a NOTIFY
        await changed
    finally:
        await other.close()
    assert await pg.next_due_at() == T0 + 10
    retry = Settlement("now", running.token, TaskStatus.RETRYING, T0 + 1, due_at=T0 + 5,
                       attempt=record(running, "retrying", T0 + 1, next_delay=4.0))  # fmt: skip
    request = ClaimRequest(worker_id="w1", limit=5, now=T0 + 1, lease_seconds=LEASE)
    assert await pg.settle_and_claim([retry], request) == ([True], [])
    assert await pg.next_due_at() == T0 + 5  # not in the claim's snapshot, but due first


# -- waking other processes ----------------------------------------------------------------


async def test_an_enqueue_elsewhere_wakes_a_waiting_backend_at_once(pg_url: str) -> None:
    waiter, other = open_backend(pg_url), open_backend(pg_url)
    await waiter.connect()
    await other.connect()
    try:
        ticket = waiter.work_signal.ticket()
        waiting = asyncio.create_task(waiter.wait_for_change(30))
        await asyncio.sleep(0)  # let it take its ticket
        started = time.monotonic()
        await other.add_tasks([new("t")])
        await asyncio.wait_for(waiting, 10)
        assert time.monotonic() - started < 5  # a notification, not the 30 s timeout
        assert ticket.is_set()  # the worker loop's own bell rings too
    finally:
        await waiter.close()
        await other.close()


async def test_its_own_enqueue_rings_in_process_but_does_not_echo(pg: PostgresBackend) -> None:
    ticket = pg.work_signal.ticket()
    await pg.add_tasks([new("t")])
    assert ticket.is_set()
    started = time.monotonic()
    await pg.wait_for_change(0.3)  # our own NOTIFY is ignored: this waits out the timeout
    assert time.monotonic() - started >= 0.25


# -- failures: cancelled callers, dropped connections --------------------------------------


async def our_sessions(admin: asyncpg.Connection, backend: PostgresBackend) -> list[str]:
    """The state of each of the backend's server sessions (pg_stat_activity)."""
    rows = await admin.fetch(
        "SELECT state, wait_event_type FROM pg_stat_activity WHERE application_name = $1",
        backend.application_name,
    )
    return [f"{r['state']}/{r['wait_event_type']}" for r in rows]


async def test_a_cancelled_claim_leaves_no_transaction_and_no_lock(
    pg: PostgresBackend, admin: asyncpg.Connection
) -> None:
    """Given another session holding a lock the claim needs, when the waiting claim is
    cancelled, then none of our sessions stays in a transaction, waits or holds a lock,
    and the next claim works (and finds the task unclaimed)."""
    await pg.add_tasks([new("t")])
    blocker = await asyncpg.connect(POSTGRES_URL)
    locked = blocker.transaction()
    await locked.start()
    await blocker.execute(f'LOCK TABLE "{pg.schema}".sitq_tasks IN SHARE MODE')
    claim = asyncio.create_task(pg.claim("w1", 1, T0, LEASE))
    try:

        async def claim_waits_for_the_lock() -> bool:
            return "active/Lock" in await our_sessions(admin, pg)

        await wait_until(claim_waits_for_the_lock, 10, "the claim to wait for the lock")
        claim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await claim

        async def all_idle() -> bool:  # (admin is outside any transaction: fresh stats)
            return all(s.startswith("idle/") for s in await our_sessions(admin, pg))

        await wait_until(all_idle, 10, "our sessions to be idle while the lock is still held")
        held = await admin.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE a.application_name = $1 AND l.locktype = 'relation'", pg.application_name,
        )  # fmt: skip
        assert held == 0
    finally:
        await locked.rollback()
        await blocker.close()
    [claimed] = await asyncio.wait_for(pg.claim("w1", 1, T0, LEASE), 10)
    assert (claimed.task_id, claimed.attempt, claimed.token) == ("t", 1, 1)


async def test_operations_and_listening_survive_terminated_connections(
    pg: PostgresBackend, pg_url: str, admin: asyncpg.Connection
) -> None:
    """Given a connected backend, when the server terminates all its sessions
    (pg_terminate_backend), then the next operations reconnect and succeed, and an enqueue
    elsewhere still wakes it (the LISTEN connection came back)."""
    await pg.add_tasks([new("t")])
    killed = await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = $1", pg.application_name,
    )  # fmt: skip
    assert killed >= 2  # the pool's connection and the listener
    [claimed] = await pg.claim("w1", 1, T0, LEASE)
    settle = Settlement("t", claimed.token, TaskStatus.SUCCEEDED, T0 + 1,
                        attempt=record(claimed, "succeeded", T0 + 1))  # fmt: skip
    await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = $1", pg.application_name,
    )  # fmt: skip
    assert await pg.settle([settle]) == [True]

    async def listening_again() -> bool:
        return bool(await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
            "AND query LIKE 'LISTEN%'", pg.application_name,
        ))  # fmt: skip

    await wait_until(listening_again, 10, "the backend to LISTEN again")
    other = open_backend(pg_url)
    await other.connect()
    try:
        waiting = asyncio.create_task(pg.wait_for_change(30))
        await asyncio.sleep(0)
        await other.add_tasks([new("u")])
        await asyncio.wait_for(waiting, 10)
    finally:
        await other.close()


# -- the engine, unchanged, on PostgreSQL ----------------------------------------------------


RAN: list[object] = []  # what the tasks below did (module level: pickled by reference)


@pytest.fixture(autouse=True)
def _clear_my_ran() -> None:
    RAN.clear()


async def record_run(i: int) -> int:
    RAN.append(i)
    await asyncio.sleep(0.001)
    return i


async def flaky_twice() -> str:
    RAN.append("try")
    if len(RAN) < 3:
        raise ConnectionError("not yet")
    return "done"


async def test_two_started_workers_share_the_work_and_run_each_task_once(pg_url: str) -> None:
    """Real clock, two workers in the background on their own connections, LISTEN/NOTIFY
    waking them: every task runs exactly once."""
    workers = [Worker(open_backend(pg_url), worker_id=f"w{n}", concurrency=5,
                      rng=random.Random(n)) for n in range(2)]  # fmt: skip
    for w in workers:
        await w.start()
    try:
        async with TaskQueue(open_backend(pg_url)) as queue:
            ids = await queue.enqueue_many([(record_run, (i,), {}) for i in range(100)])
            results = await queue.gather(ids, timeout=60)
            history = await queue.history()
    finally:
        for w in workers:
            await w.stop()
    assert [r.value for r in results if r is not None] == list(range(100))
    assert sorted(RAN) == list(range(100))  # type: ignore[type-var]
    assert {a.worker_id for a in history} <= {"w0", "w1"} and len(history) == 100


async def test_a_fake_clock_drives_retries_on_postgres(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    task_id = await queue.with_options(retry=RetryPolicy.fixed(10, max_attempts=3)).enqueue(
        flaky_twice
    )
    await worker.run_until_idle()
    result = await queue.get_result(task_id)
    assert result is not None and result.value == "done" and result.attempts == 3
    history = await queue.history(task_id)
    assert [a.started_at - clock.start for a in history] == [0, 10, 20]
    assert [a.outcome for a in history] == ["retrying", "retrying", "succeeded"]


# Existing engine tests, imported as they are: collected here, they get this module's
# `backend` (PostgreSQL). Only tests that use the shared fixtures (queue, worker, backend,
# clock) are picked; their module fixtures come along.
from test_batches import (  # noqa: E402
    test_a_batch_of_many_runs_in_one_go,
    test_gather_follows_the_order_asked_for,
    test_ids_come_back_in_order,
    test_one_bad_item_inserts_nothing,
)
from test_error_handling import (  # noqa: E402
    clock,  # the module's clock, which its tasks read
    test_an_exponential_policy_runs_exactly_on_its_schedule,
    test_cancel_waiting_tasks_queued_scheduled_and_retrying,
    test_decorrelated_jitter_grows_from_its_previous_delay,
    test_exhausted_retries_land_in_dead_letters_and_can_be_requeued,
    test_fails_twice_then_succeeds_with_three_attempts,
    test_purge_deletes_dead_letters_but_keeps_their_history,
)
from test_queue import (  # noqa: E402
    _clear_ran,
    test_async_task_result,
    test_delay_and_eta_order_execution,
    test_priority_runs_first_among_due_tasks,
)
from test_status_progress import (  # noqa: E402
    _fresh_state,
    test_counts_lists_every_state,
    test_failed_attempt_waits_as_retrying_then_succeeds,
    test_progress_is_visible_while_the_task_runs,
)

__all__ = [
    "_clear_ran",
    "_fresh_state",
    "clock",
    "test_a_batch_of_many_runs_in_one_go",
    "test_an_exponential_policy_runs_exactly_on_its_schedule",
    "test_async_task_result",
    "test_cancel_waiting_tasks_queued_scheduled_and_retrying",
    "test_counts_lists_every_state",
    "test_decorrelated_jitter_grows_from_its_previous_delay",
    "test_delay_and_eta_order_execution",
    "test_exhausted_retries_land_in_dead_letters_and_can_be_requeued",
    "test_failed_attempt_waits_as_retrying_then_succeeds",
    "test_fails_twice_then_succeeds_with_three_attempts",
    "test_gather_follows_the_order_asked_for",
    "test_ids_come_back_in_order",
    "test_one_bad_item_inserts_nothing",
    "test_priority_runs_first_among_due_tasks",
    "test_progress_is_visible_while_the_task_runs",
    "test_purge_deletes_dead_letters_but_keeps_their_history",
]

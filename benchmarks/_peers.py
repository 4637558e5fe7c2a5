"""The peers sitq is measured against, in the same run and on the same disk.

- raw sqlite3 and raw aiosqlite on **sitq's own schema**: the floor for sitq's writes, with
  and without its driver, at its PRAGMAs (WAL, synchronous=NORMAL). The rows are copies of
  the columns sitq itself set on a row, so the schema can change without this file changing.
- a **minimal queue** in raw sqlite3: one table, claim one row, settle it (the least any
  durable SQLite queue has to do); and the same claiming 10 rows and settling 10 per
  transaction, the physical limit of a queue that batches as sitq's worker does.
- the same batch-10 queue in raw **asyncpg** on the PostgreSQL server, the limit for sitq's
  PostgreSQL backend.
- **huey**'s SqliteHuey, a popular SQLite-backed queue, at sitq's durability
  (synchronous=NORMAL, through a small subclass): the peer every ratio compares with. At its
  default durability (FULL, a disk flush per commit) it is an extra row, for reference.

Every contender times its work with `timed()`: tasks a second, and the CPU seconds per
1,000 tasks of this process (huey's consumer runs in this process, on threads).
"""

from __future__ import annotations

import pickle
import shutil
import signal
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _tasks
import aiosqlite
from _databases import POSTGRES_URL, PROBE_TIMEOUT
from _runner import Measure, Reading, rate, timed
from huey import SqliteHuey
from huey.storage import SqliteStorage

from sitq import SQLiteBackend, TaskQueue

TIMEOUT = 600.0
RAW = "(WAL, synchronous=NORMAL)"


def connect_raw(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with sitq's PRAGMAs, in autocommit mode."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


# -- raw inserts on sitq's schema ----------------------------------------------------------


async def sitq_row_template(path: Path) -> tuple[list[str], tuple[Any, ...]]:
    """Create sitq's schema in `path` by opening sitq on it, enqueue one task, and return
    the columns sitq set on that row, with their values.

    Columns left at their DEFAULT (or NULL) are dropped, so a raw INSERT writes what
    sitq's enqueue writes and nothing more, whatever the schema looks like.
    """
    async with TaskQueue(SQLiteBackend(path)) as queue:
        await queue.enqueue(_tasks.noop)
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT * FROM sitq_tasks LIMIT 1").fetchone()
        info = conn.execute("PRAGMA table_info(sitq_tasks)").fetchall()
    finally:
        conn.close()
    kept = [
        (name, value)
        for (_, name, _, _, default, is_key), value in zip(info, row, strict=True)
        if not is_key and _set_explicitly(value, default)
    ]
    return [name for name, _ in kept], tuple(value for _, value in kept)


def _set_explicitly(value: Any, default_sql: str | None) -> bool:
    """True if `value` is not what the column's DEFAULT clause (or NULL) would give."""
    if default_sql is None:
        return value is not None
    return str(value) != default_sql.strip("'")


def copies(columns: list[str], template: tuple[Any, ...], n: int) -> list[tuple[Any, ...]]:
    """`n` copies of the template row, each with a fresh id and the current time."""
    now = time.time()
    fresh: dict[str, Any] = {"enqueued_at": now, "due_at": now}
    rows = []
    for _ in range(n):
        fresh["id"] = str(uuid.uuid4())
        rows.append(tuple(fresh.get(c, v) for c, v in zip(columns, template, strict=True)))
    return rows


def insert_sql(columns: list[str]) -> str:
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO sitq_tasks ({', '.join(columns)}) VALUES ({marks})"


def raw_sqlite3_one_by_one(n: int) -> Measure:
    """One INSERT per task in plain sqlite3, autocommit, from the caller's thread: the
    physical limit of enqueueing one by one (rows made before the clock starts)."""

    async def run(workdir: Path) -> list[Reading]:
        path = workdir / "q.db"
        columns, template = await sitq_row_template(path)
        rows, sql = copies(columns, template, n), insert_sql(columns)
        conn = connect_raw(path)
        try:
            with timed() as took:
                for row in rows:
                    conn.execute(sql, row)
        finally:
            conn.close()
        label = f"raw sqlite3 INSERT, autocommit, sitq schema {RAW}"
        return [rate("raw_sqlite3", label, n, took)]

    return run


def raw_aiosqlite_one_by_one(n: int) -> Measure:
    """One INSERT per task through aiosqlite in autocommit: one trip, atomic by itself."""

    async def run(workdir: Path) -> list[Reading]:
        path = workdir / "q.db"
        columns, template = await sitq_row_template(path)
        rows, sql = copies(columns, template, n), insert_sql(columns)
        async with aiosqlite.connect(path, isolation_level=None) as conn:
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            with timed() as took:
                for row in rows:
                    await conn.execute(sql, row)
        label = f"raw aiosqlite INSERT, autocommit, sitq schema {RAW}"
        return [rate("aiosqlite", label, n, took)]

    return run


def raw_executemany(n: int) -> Measure:
    """All rows in one transaction with sqlite3's executemany."""

    async def run(workdir: Path) -> list[Reading]:
        path = workdir / "q.db"
        columns, template = await sitq_row_template(path)
        rows, sql = copies(columns, template, n), insert_sql(columns)
        conn = connect_raw(path)
        try:
            with timed() as took:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
        finally:
            conn.close()
        label = f"raw sqlite3 executemany, sitq schema {RAW}"
        return [rate("raw_executemany", label, n, took, unit="rows/s")]

    return run


# -- a minimal queue in raw sqlite3 ----------------------------------------------------------


class MinimalQueue:
    """The least a durable SQLite queue does: claim the oldest waiting row, run it, mark it
    done with its result. Two autocommit statements per task, rows kept afterwards."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY, payload BLOB NOT NULL,
        state INTEGER NOT NULL DEFAULT 0, result BLOB);
    CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (id) WHERE state = 0;
    """
    CLAIM = (
        "UPDATE jobs SET state = 1 WHERE id = "
        "(SELECT id FROM jobs WHERE state = 0 ORDER BY id LIMIT 1) RETURNING id, payload"
    )
    SETTLE = "UPDATE jobs SET state = 2, result = ? WHERE id = ?"

    def __init__(self, path: Path) -> None:
        self.conn = connect_raw(path)
        self.conn.executescript(self.SCHEMA)

    def fill(self, n: int) -> None:
        payload = pickle.dumps(_tasks.tick_sync)
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany("INSERT INTO jobs (payload) VALUES (?)", [(payload,)] * n)
        self.conn.execute("COMMIT")

    CLAIM_BATCH = (
        "UPDATE jobs SET state = 1 WHERE id IN "
        "(SELECT id FROM jobs WHERE state = 0 ORDER BY id LIMIT ?) RETURNING id, payload"
    )

    def run_one(self) -> bool:
        """Claim, run and settle one job; False when none waits."""
        row = self.conn.execute(self.CLAIM).fetchone()
        if row is None:
            return False
        job_id, payload = row
        result = pickle.loads(payload)()
        self.conn.execute(self.SETTLE, (pickle.dumps(result), job_id))
        return True

    def run_all_in_batches(self, size: int) -> None:
        """Run every job, one transaction per batch: settle the last `size` jobs' results
        and claim the next `size` jobs in the same commit, as sitq's worker does."""
        done: list[tuple[bytes, int]] = []
        while True:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(self.SETTLE, done)
            claimed = self.conn.execute(self.CLAIM_BATCH, (size,)).fetchall()
            self.conn.execute("COMMIT")
            if not claimed:
                return
            done = [(pickle.dumps(pickle.loads(payload)()), job_id) for job_id, payload in claimed]

    def close(self) -> None:
        self.conn.close()


def minimal_drain(n: int) -> Measure:
    """The minimal queue in raw sqlite3, one job at a time: claim (one autocommit UPDATE
    ... RETURNING), run, settle (another): two commits per task."""

    async def run(workdir: Path) -> list[Reading]:
        queue = MinimalQueue(workdir / "q.db")
        try:
            queue.fill(n)
            with timed() as took:
                while queue.run_one():
                    pass
        finally:
            queue.close()
        return [rate("minimal", f"raw sqlite3 minimal queue, one by one {RAW}", n, took)]

    return run


BATCH = 10  # tasks per claim in the batch-10 raw queues, as sitq's worker at concurrency 10


def minimal_batch_drain(n: int) -> Measure:
    """The minimal queue in raw sqlite3 claiming 10 jobs and settling 10 per transaction:
    the physical limit of a SQLite queue that batches (one commit per 10 tasks)."""

    async def run(workdir: Path) -> list[Reading]:
        queue = MinimalQueue(workdir / "q.db")
        try:
            queue.fill(n)
            with timed() as took:
                queue.run_all_in_batches(BATCH)
        finally:
            queue.close()
        label = f"raw sqlite3 minimal queue, claim {BATCH} + settle {BATCH} a transaction {RAW}"
        return [rate("minimal_b10", label, n, took)]

    return run


class MinimalDepthDrain:
    """The minimal queue's first `first` tasks at a depth, topped up after each round."""

    def __init__(self, depth: int, first: int) -> None:
        self.depth, self.first = depth, first
        self.folder: Path | None = None
        self.queue: MinimalQueue | None = None

    async def run(self, workdir: Path) -> list[Reading]:
        if self.queue is None:
            self.folder = Path(tempfile.mkdtemp(prefix="sitq-bench-depth-raw-"))
            self.queue = MinimalQueue(self.folder / "q.db")
            self.queue.fill(self.depth)
        with timed() as took:
            for _ in range(self.first):
                self.queue.run_one()
        self.queue.fill(self.first)
        label = f"raw sqlite3 minimal queue, depth {self.depth:,} {RAW}"
        return [rate(f"minimal.{self.depth}", label, self.first, took)]

    async def close(self) -> None:
        if self.queue is not None:
            self.queue.close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


# -- huey ------------------------------------------------------------------------------------


class NormalSyncStorage(SqliteStorage):  # type: ignore[misc]  # huey has no type hints
    """SqliteStorage at synchronous=NORMAL, sitq's durability (huey's default is FULL)."""

    def _create_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._create_connection()
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn


class NormalSyncHuey(SqliteHuey):  # type: ignore[misc]
    storage_class = NormalSyncStorage


SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class HueyPeer:
    """A SqliteHuey on a file with the benchmark's tasks registered on it."""

    def __init__(self, path: Path, normal: bool) -> None:
        huey_class = NormalSyncHuey if normal else SqliteHuey
        self.huey = huey_class("bench", filename=str(path))
        self.tick = self.huey.task()(_tasks.tick_sync)
        self.noop = self.huey.task()(_tasks.noop_sync)
        self.one = self.huey.task()(_tasks.one_sync)

    def durability(self) -> str:
        """What this huey really runs at, read from its connection."""
        with self.huey.storage.db() as cursor:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            sync = cursor.execute("PRAGMA synchronous").fetchone()[0]
        return f"{mode.upper()}, synchronous={SYNCHRONOUS_NAMES.get(sync, sync)}"

    def label(self, what: str) -> str:
        return f"huey {what} ({self.durability()})"

    @contextmanager
    def consumer(self) -> Iterator[None]:
        """huey's consumer with one worker thread in this process; stopped gracefully."""
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        consumer = self.huey.create_consumer(
            workers=1, worker_type="thread", periodic=False, check_worker_health=False
        )
        consumer.start()
        for signum, handler in saved.items():  # the consumer sets its own; keep ours
            signal.signal(signum, handler)
        try:
            yield
        finally:
            consumer.stop(graceful=True)

    def close(self) -> None:
        self.huey.storage.close()


def _huey_key(normal: bool) -> str:
    return "huey_normal" if normal else "huey_full"


def huey_enqueue(n: int, normal: bool) -> Measure:
    """huey's producer calling a task `n` times: one INSERT and commit per task, from the
    caller's thread."""

    async def run(workdir: Path) -> list[Reading]:
        peer = HueyPeer(workdir / "huey.db", normal)
        try:
            peer.noop()  # warm: the connection
            with timed() as took:
                for _ in range(n):
                    peer.noop()
            return [rate(_huey_key(normal), peer.label("SqliteHuey"), n, took)]
        finally:
            peer.close()

    return run


def prefill_huey(path: Path, n: int) -> None:
    """Queue `n` counted tasks through huey at NORMAL: the file's content does not depend
    on the durability it was written with, and at FULL this would take much longer."""
    peer = HueyPeer(path, normal=True)
    try:
        for _ in range(n):
            peer.tick()
    finally:
        peer.close()


def huey_drain(n: int, normal: bool) -> Measure:
    """huey's consumer (1 worker thread, in this process) running `n` waiting tasks, from
    its start to its graceful stop."""

    async def run(workdir: Path) -> list[Reading]:
        prefill_huey(workdir / "huey.db", n)
        peer = HueyPeer(workdir / "huey.db", normal)
        try:
            _tasks.COUNTDOWN.arm(n)
            with timed() as took, peer.consumer():
                _tasks.COUNTDOWN.wait(TIMEOUT)
            return [rate(_huey_key(normal), peer.label("consumer, 1 thread"), n, took)]
        finally:
            peer.close()

    return run


def huey_end_to_end(n: int, normal: bool) -> Measure:
    """Enqueue `n` tasks one by one, then fetch every result, huey's consumer (1 worker
    thread) running them in this process."""

    async def run(workdir: Path) -> list[Reading]:
        peer = HueyPeer(workdir / "huey.db", normal)
        try:
            with peer.consumer():
                peer.one().get(blocking=True, timeout=TIMEOUT)
                with timed() as took:
                    handles = [peer.one() for _ in range(n)]
                    values = [h.get(blocking=True, timeout=TIMEOUT) for h in handles]
            if values != [1] * n:
                raise RuntimeError("huey end to end: a task did not return 1")
            return [rate(_huey_key(normal), peer.label("consumer, 1 thread"), n, took)]
        finally:
            peer.close()

    return run


# -- a batch-10 queue in raw asyncpg, on the PostgreSQL server --------------------------------


class AsyncpgBatchQueue:
    """The minimal queue on PostgreSQL, in a schema of its own: each transaction settles the
    last 10 jobs and claims the next 10 (FOR UPDATE SKIP LOCKED, as a queue that lets
    several workers share it must). One connection, one trip per statement."""

    SCHEMA = """
    CREATE TABLE jobs (
        id BIGSERIAL PRIMARY KEY, payload BYTEA NOT NULL,
        state SMALLINT NOT NULL DEFAULT 0, result BYTEA);
    CREATE INDEX jobs_waiting ON jobs (id) WHERE state = 0;
    """
    FILL = "INSERT INTO jobs (payload) SELECT unnest($1::bytea[])"
    CLAIM = """
    UPDATE jobs SET state = 1 WHERE id IN (
        SELECT id FROM jobs WHERE state = 0 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING id, payload"""
    SETTLE = """
    UPDATE jobs SET state = 2, result = done.result
      FROM unnest($1::bigint[], $2::bytea[]) AS done(id, result) WHERE jobs.id = done.id"""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def fill(self, n: int) -> None:
        """`n` jobs in one statement (the enqueue_many of this queue)."""
        await self.conn.execute(self.FILL, [pickle.dumps(_tasks.noop_sync)] * n)

    async def run_all_in_batches(self, size: int) -> None:
        ids: list[int] = []
        results: list[bytes] = []
        while True:
            async with self.conn.transaction():
                if ids:
                    await self.conn.execute(self.SETTLE, ids, results)
                claimed = await self.conn.fetch(self.CLAIM, size)
            if not claimed:
                return
            ids = [row["id"] for row in claimed]
            results = [pickle.dumps(pickle.loads(row["payload"])()) for row in claimed]


def asyncpg_batch_drain(n: int, work: str) -> Measure:
    """The raw asyncpg batch-10 queue: `n` no-op jobs filled in one statement, then run,
    clocked like sitq's PostgreSQL drain rows (from the enqueue to the last settle). The
    CPU column is this process's: the server's own CPU is not in it (nor in sitq's)."""

    async def run(workdir: Path) -> list[Reading]:
        import asyncpg

        schema = f"raw_bench_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(POSTGRES_URL, timeout=PROBE_TIMEOUT)
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"; SET search_path TO "{schema}"')
            await conn.execute(AsyncpgBatchQueue.SCHEMA)
            queue = AsyncpgBatchQueue(conn)
            with timed() as took:
                await queue.fill(n)
                await queue.run_all_in_batches(BATCH)
        finally:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
        label = f"raw asyncpg queue, claim {BATCH} + settle {BATCH} a transaction"
        return [rate("raw_asyncpg_b10", label, n, took, work=work)]

    return run

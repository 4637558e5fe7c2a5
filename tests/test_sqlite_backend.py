"""SQLiteBackend: WAL mode, schema version, file permissions, claims."""

from __future__ import annotations

import re
import sqlite3
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from sitq import BackendError, SchemaVersionError, SQLiteBackend, TaskQueue, TaskStatus, Worker
from sitq.backends.base import NewTask
from sitq.backends.sqlite import sql as sqlite_sql
from sitq.backends.sqlite.ops import ROWS_PER_INSERT
from sitq.backends.sqlite.sql import SCHEMA_VERSION


async def test_file_database_uses_wal_and_owner_only_permissions(db_path: Path) -> None:
    backend = SQLiteBackend(db_path)
    await backend.connect()
    await backend.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = conn.execute("SELECT value FROM sitq_meta WHERE key='schema_version'")
        assert int(version.fetchone()[0]) == SCHEMA_VERSION
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


async def test_newer_schema_is_refused(db_path: Path) -> None:
    backend = SQLiteBackend(db_path)
    await backend.connect()
    await backend.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "UPDATE sitq_meta SET value = ? WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )
    with pytest.raises(SchemaVersionError, match="upgrade sitq"):
        await SQLiteBackend(db_path).connect()


async def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="does not exist"):
        await SQLiteBackend(tmp_path / "nope" / "q.db").connect()


async def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, I am not a database\n" * 100)
    with pytest.raises(BackendError, match=r"not a usable SQLite database|cannot set up"):
        await SQLiteBackend(path).connect()


# -- statements that stay cheap at every run ---------------------------------------------------


def opcodes(statement: str) -> list[str]:
    """The SQLite program of `statement` (its EXPLAIN), prepared on a fresh sitq schema."""
    conn = sqlite3.connect(":memory:")
    conn.executescript(sqlite_sql.SCHEMA)
    names = {name: None for name in re.findall(r":([a-z_]+)", statement)}
    params = names or [None] * statement.count("?")
    return [row[1] for row in conn.execute(f"EXPLAIN {statement}", params)]


@pytest.mark.parametrize(
    "name", ["INSERT_PLAIN_TASK", "INSERT_TASK", "SETTLE", "RENEW", "INSERT_ATTEMPT"]
)
def test_a_write_of_one_row_builds_no_temporary_table(name: str) -> None:
    """A partial index's WHERE is checked on every insert and update. Written as
    `status IN ('a', 'b', 'c')`, SQLite would fill a temporary table with the list at every
    run (and the memory churn cost more than the write); `(status = 'a' OR ...)` does not."""
    assert "OpenEphemeral" not in opcodes(getattr(sqlite_sql, name))


async def test_indexes_an_older_sitq_defined_otherwise_are_rebuilt_on_open(
    db_path: Path,
) -> None:
    """A file from schema version 2 has its partial indexes written with IN lists, which
    would cost every write a temporary table: opening it builds them again, and it works."""
    backend = SQLiteBackend(db_path)
    await backend.connect()
    await backend.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP INDEX sitq_tasks_claim")
        conn.execute(
            "CREATE INDEX sitq_tasks_claim ON sitq_tasks (priority DESC, due_at) "
            "WHERE status IN ('queued', 'retrying', 'scheduled')"
        )
        conn.execute("UPDATE sitq_meta SET value = '2' WHERE key = 'schema_version'")

    backend = SQLiteBackend(db_path)
    async with TaskQueue(backend) as queue:
        worker = Worker(backend)
        task_id = await queue.enqueue(double, 21)
        await worker.run_until_idle()
        await worker.stop()
        result = await queue.get_result(task_id, timeout=0)
    assert result is not None and result.value == 42
    with sqlite3.connect(db_path) as conn:
        [(definition,)] = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'sitq_tasks_claim'"
        ).fetchall()
        version = conn.execute("SELECT value FROM sitq_meta WHERE key = 'schema_version'")
        assert int(version.fetchone()[0]) == SCHEMA_VERSION
    assert " IN (" not in definition and sqlite_sql.IS_WAITING in definition


async def double(x: int) -> int:
    return 2 * x


async def test_new_rows_carry_their_state_as_plain_text(db_path: Path) -> None:
    """sqlite3 binds a str subclass (the TaskStatus enum) through its adapter lookup, about
    0.35 us a row slower than a plain str: enqueue hands the backend plain text."""
    seen: list[NewTask] = []

    class Watching(SQLiteBackend):
        async def add_tasks(self, tasks: Sequence[NewTask]) -> None:
            seen.extend(tasks)
            await super().add_tasks(tasks)

    async with TaskQueue(Watching(db_path)) as queue:
        await queue.enqueue_many([(double, (i,)) for i in range(3)])
        await queue.with_options(delay=60).enqueue(double, 1)
        counts = await queue.counts()
    assert [type(task.status) for task in seen] == [str] * 4
    assert [task.status for task in seen] == ["queued"] * 3 + ["scheduled"]
    assert (counts[TaskStatus.QUEUED], counts[TaskStatus.SCHEDULED]) == (3, 1)


def new_rows(count: int, priority: int = 0, start: int = 0) -> list[NewTask]:
    return [
        NewTask(f"task-{start + i:05d}", "job", b"payload", "queued", 1.0, 1.0, priority)
        for i in range(count)
    ]


async def test_a_batch_of_many_statements_keeps_every_row_in_order_or_none(
    db_path: Path,
) -> None:
    """A big batch is inserted ROWS_PER_INSERT rows per statement; every row lands in
    order with its own columns, and one bad row keeps the whole batch out."""
    per = ROWS_PER_INSERT
    backend = SQLiteBackend(db_path)
    await backend.connect()
    try:
        plain, with_priority = new_rows(2 * per + 1), new_rows(per + 1, priority=5, start=5000)
        await backend.add_tasks(plain)  # three statements, the last of one row
        await backend.add_tasks(with_priority)  # all nine columns: two statements
        spoiled = new_rows(per + 5, start=9000)
        spoiled[per + 2] = spoiled[per + 2]._replace(task_id=plain[7].task_id)  # a duplicate
        with pytest.raises(sqlite3.IntegrityError):
            await backend.add_tasks(spoiled)
    finally:
        await backend.close()
    with sqlite3.connect(db_path) as conn:
        stored = conn.execute("SELECT id, priority FROM sitq_tasks ORDER BY seq").fetchall()
    assert stored == [(t.task_id, t.priority) for t in plain + with_priority]

"""An idle worker notices other processes' commits without trips to its connection.

`CommitWatch` reads the WAL-index header SQLite keeps in the `-shm` file (real files, a
second real connection standing for another process); `wait_for_change` uses it and makes
no round trip to the connection's thread while it waits, and falls back to `PRAGMA data_version`
where there is no such file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from trip_counting import counting_trips

from sitq import SQLiteBackend, TaskQueue
from sitq.backends.sqlite.watch import CommitWatch

pytestmark = pytest.mark.sqlite_only


async def quick() -> None:
    pass


def other_process_enqueues(db: Path) -> None:
    """A commit from another connection (as another process's enqueue would make)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("UPDATE sitq_meta SET value = value WHERE key = 'schema_version'")
        conn.execute("INSERT OR REPLACE INTO sitq_meta (key, value) VALUES ('poke', 'x')")
    finally:
        conn.close()


async def test_the_watch_sees_a_commit_and_nothing_else(db_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        await queue.enqueue(quick)
        watch = CommitWatch(str(db_path))
        assert watch.open()
        assert not watch.changed()
        await queue.counts()  # a read commits nothing
        assert not watch.changed()
        other_process_enqueues(db_path)
        assert watch.changed()
        assert not watch.changed()  # seen: quiet again
        watch.close()


def test_without_a_wal_index_the_watch_says_it_cannot_work(tmp_path: Path) -> None:
    assert not CommitWatch(str(tmp_path / "never-created.db")).open()


async def test_waiting_for_a_change_makes_no_trip_and_returns_on_a_commit(
    db_path: Path,
) -> None:
    backend = SQLiteBackend(db_path)
    async with TaskQueue(backend) as queue:
        await queue.enqueue(quick)
        with counting_trips(backend) as trips:
            await backend.wait_for_change(0.1)  # nothing happens: times out
            assert trips.count == 0, trips
            waiter = asyncio.ensure_future(backend.wait_for_change(30))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            other_process_enqueues(db_path)
            await asyncio.wait_for(waiter, 5)  # noticed within a look or two
            assert trips.count == 0, trips


async def test_in_memory_waiting_falls_back_to_asking_sqlite() -> None:
    backend = SQLiteBackend(":memory:")
    async with TaskQueue(backend) as queue:
        await queue.enqueue(quick)
        await backend.wait_for_change(0.05)  # asks PRAGMA data_version; times out quietly
        assert backend._data_version is not None


def locks_held_on(path: Path) -> list[str]:
    """This process's POSIX locks on `path`, as /proc/locks lists them (Linux), without
    each line's ordinal: locks other processes take or drop meanwhile renumber the list."""
    inode = path.stat().st_ino
    mine = str(__import__("os").getpid())
    return [
        " ".join(line.split()[1:])
        for line in Path("/proc/locks").read_text().splitlines()
        if line.split()[4] == mine and line.split()[5].endswith(f":{inode}")
    ]


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads /proc/locks (Linux)")
async def test_watching_leaves_sqlites_locks_on_the_wal_index_alone(db_path: Path) -> None:
    """Closing any descriptor of a file drops all of the process's POSIX locks on it. A watch
    that opened and closed its own descriptor of `-shm` dropped SQLite's "dead man's switch"
    lock: another process could then take itself for the first connection and truncate the
    file under this one's mapping (a worker ended by SIGBUS). The watch uses SQLite's own
    descriptor, so the lock SQLite took is still held after the watch opens and closes."""
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        await queue.enqueue(quick)
        shm = Path(f"{db_path}-shm")
        held = locks_held_on(shm)
        assert held, "SQLite holds a lock on -shm while its connection is open"
        watch = CommitWatch(str(db_path))
        assert watch.open()
        assert locks_held_on(shm) == held
        watch.close()
        assert locks_held_on(shm) == held

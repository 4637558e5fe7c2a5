"""SQLiteBackend: WAL mode, schema version, file permissions, claims."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from sitq import BackendError, SchemaVersionError, SQLiteBackend
from sitq.backends.sqlite_sql import SCHEMA_VERSION


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

"""Backends for tests: one test, run on SQLite and on PostgreSQL.

`database` is a fixture parametrized over ["sqlite", "postgres"]: a fresh, empty store per
test (a new SQLite file in the test's tmp dir, or a new PostgreSQL schema that is dropped
afterwards) with its URL, which worker processes can be given too. `any_backend` is a
connected backend on it. A module adopts them by naming them as parameters (conftest.py
makes both available everywhere); the PostgreSQL half skips, saying how to enable it,
when no server answers.

The server: SITQ_TEST_POSTGRES_URL, else postgresql://postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from sitq.backends import Backend, open_backend

POSTGRES_URL = os.environ.get("SITQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
KINDS = ["sqlite", "postgres"]
PROBE_TIMEOUT = 3.0  # seconds: a local server answers in milliseconds


@functools.cache
def postgres_unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here (None: they can). Asked once per session."""

    async def probe() -> None:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL, timeout=PROBE_TIMEOUT)
        await conn.close()

    try:
        with ThreadPoolExecutor(1) as thread:  # works whether or not a loop is running
            thread.submit(asyncio.run, probe()).result()
    except Exception as exc:
        return (
            f"no PostgreSQL server answers at {POSTGRES_URL} ({type(exc).__name__}: {exc}). "
            "To run these tests, start PostgreSQL on 127.0.0.1:5432 (user postgres, trust "
            "auth, database test) or set SITQ_TEST_POSTGRES_URL to a database you may use."
        )
    return None


def skip_without_postgres() -> None:
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)


def fresh_schema() -> str:
    return f"sitq_test_{uuid.uuid4().hex[:12]}"


def postgres_url(schema: str) -> str:
    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}schema={schema}"


async def drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL, timeout=PROBE_TIMEOUT)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@dataclass(frozen=True)
class Database:
    """A fresh store for one test: `url` opens it (in this process or a worker process)."""

    kind: str
    url: str
    schema: str | None = None  # PostgreSQL only

    def backend(self) -> Backend:
        """A new, not yet connected backend object on this store."""
        return open_backend(self.url)


def make_database(kind: str, tmp_path: Path) -> Database:
    """A fresh store of this kind (skips the test if it is PostgreSQL and none answers)."""
    if kind == "sqlite":
        return Database(kind, str(tmp_path / "queue.db"))
    if kind == "postgres":
        skip_without_postgres()
        schema = fresh_schema()
        return Database(kind, postgres_url(schema), schema)
    raise ValueError(f"unknown backend kind {kind!r}; choose from {KINDS}")


async def discard(database: Database) -> None:
    """Remove what a test left behind (SQLite's file goes with tmp_path)."""
    if database.schema is not None:
        await drop_schema(database.schema)


@pytest.fixture(params=KINDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh store per test, once on SQLite and once on PostgreSQL."""
    db = make_database(request.param, tmp_path)
    yield db
    await discard(db)


@pytest.fixture
async def any_backend(database: Database) -> AsyncIterator[Backend]:
    """A connected backend on `database`: the test runs on each kind in turn."""
    backend = database.backend()
    await backend.connect()
    yield backend
    await backend.close()


def write_lock_is_free(db_path: Path, wait: float = 0.0) -> bool:
    """True if a fresh connection can take SQLite's write lock on the file within `wait`
    seconds (0: right now), that is if no process holds it."""
    conn = sqlite3.connect(db_path, timeout=wait, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()

"""Where a benchmark's worker processes keep their queue: a SQLite file or a PostgreSQL schema.

Each contender gets a store of its own, empty at the start and removed at the end, so two
contenders of a group never take each other's tasks (their workers run side by side while
the rounds interleave). A SQLite store is a file in a temp folder; a PostgreSQL store is a
fresh schema in the benchmark server's database, dropped afterwards. Both hand out a URL
that `TaskQueue(url)` and `python -m sitq worker URL` open alike.

The server: SITQ_BENCH_POSTGRES_URL, else postgresql://postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Protocol

POSTGRES_URL = os.environ.get(
    "SITQ_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
PROBE_TIMEOUT = 3.0  # seconds: a reachable server answers in milliseconds


class Store(Protocol):
    """An empty queue store for one contender: `url` opens it, `discard` removes it."""

    url: str

    async def discard(self) -> None: ...


class SQLiteStore:
    """A database file in a temp folder of its own (sitq creates it on first connect)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sitq-bench-db-"))
        self.url = str(self.folder / "q.db")

    async def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class PostgresStore:
    """A fresh schema on the benchmark server (sitq creates it on first connect)."""

    def __init__(self) -> None:
        self.schema = f"sitq_bench_{uuid.uuid4().hex[:12]}"
        separator = "&" if "?" in POSTGRES_URL else "?"
        self.url = f"{POSTGRES_URL}{separator}schema={self.schema}"

    async def discard(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL, timeout=PROBE_TIMEOUT)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await conn.close()


async def postgres_version() -> str:
    """The server's version and durability, e.g. "15.20, synchronous_commit=on" (a flush to
    disk per commit, the default); ConnectionError saying why if no server answers."""
    try:
        import asyncpg
    except ImportError as exc:
        raise ConnectionError(
            f"asyncpg is not installed (pip install -e '.[postgres]'): {exc}"
        ) from exc
    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=PROBE_TIMEOUT)
    except Exception as exc:  # refused, unknown host, bad auth, no such database...
        raise ConnectionError(
            f"no PostgreSQL server answers at {POSTGRES_URL} ({type(exc).__name__}: {exc}); "
            "start one there or set SITQ_BENCH_POSTGRES_URL"
        ) from exc
    try:
        version = str(await conn.fetchval("SHOW server_version")).split()[0]
        commit = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    return f"{version}, synchronous_commit={commit}"

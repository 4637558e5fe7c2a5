"""Shared fixtures: a fresh SQLite file per test, a virtual clock, a queue and a worker.

`database`/`any_backend` (from tests/backends.py) run a test on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from backends import any_backend, database  # noqa: F401 - fixtures for every test module

from sitq import FakeClock, SQLiteBackend, TaskQueue, Worker


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def backend(db_path: Path) -> AsyncIterator[SQLiteBackend]:
    backend = SQLiteBackend(db_path)
    await backend.connect()
    yield backend
    await backend.close()


@pytest.fixture
async def queue(backend: SQLiteBackend, clock: FakeClock) -> AsyncIterator[TaskQueue]:
    async with TaskQueue(backend, clock=clock) as queue:
        yield queue


@pytest.fixture
async def worker(backend: SQLiteBackend, clock: FakeClock) -> AsyncIterator[Worker]:
    worker = Worker(backend, clock=clock, rng=random.Random(0), worker_id="w1")
    yield worker
    await worker.stop()

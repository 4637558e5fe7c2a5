"""Shared fixtures: a fresh store per test, a virtual clock, a queue and a worker.

The conformance suite: in a module marked `pytestmark = pytest.mark.every_backend`, every
test that uses the `backend` fixture (or `queue`/`worker`, built on it) runs twice, on a
fresh SQLite file and on a fresh PostgreSQL schema (skipped, saying how to enable it, when
no server answers). A test that also asks for `db_path` works on the SQLite file itself,
so it runs on SQLite only, and so does a test marked `sqlite_only`. `database` and
`any_backend` (tests/backends.py) do the same for tests that want the store's URL, e.g. for
worker processes.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from backends import KINDS, any_backend, database, discard, make_database  # noqa: F401

from sitq import FakeClock, TaskQueue, Worker
from sitq.backends import Backend


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "every_backend: run backend tests on every backend")
    config.addinivalue_line(
        "markers", "sqlite_only: a test of SQLite itself (its thread, its file)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `backend_kind` for the conformance suite (see the module docstring)."""
    if "backend_kind" not in metafunc.fixturenames:
        return
    own = inspect.signature(metafunc.function).parameters
    sqlite_only = "db_path" in own or metafunc.definition.get_closest_marker("sqlite_only")
    if metafunc.definition.get_closest_marker("every_backend") and not sqlite_only:
        metafunc.parametrize("backend_kind", KINDS)


@pytest.fixture
def backend_kind() -> str:
    return "sqlite"


@pytest.fixture
async def backend(backend_kind: str, tmp_path: Path) -> AsyncIterator[Backend]:
    """A connected backend on a fresh store (SQLite's file is `db_path`)."""
    store = make_database(backend_kind, tmp_path)
    backend = store.backend()
    await backend.connect()
    yield backend
    await backend.close()
    await discard(store)


@pytest.fixture
async def queue(backend: Backend, clock: FakeClock) -> AsyncIterator[TaskQueue]:
    async with TaskQueue(backend, clock=clock) as queue:
        yield queue


@pytest.fixture
async def worker(backend: Backend, clock: FakeClock) -> AsyncIterator[Worker]:
    worker = Worker(backend, clock=clock, rng=random.Random(0), worker_id="w1")
    yield worker
    await worker.stop()

"""Counting round trips into aiosqlite's thread: the functions handed to it, by name.

The connection stays real; only its one way in (`_execute`) is wrapped while counting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sitq import SQLiteBackend


@contextmanager
def counting_trips(backend: SQLiteBackend) -> Iterator[Counter[str]]:
    conn = backend._conn
    assert conn is not None, "connect the backend first"
    real = conn._execute
    counted: Counter[str] = Counter()

    async def counting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        counted[getattr(fn, "__name__", repr(fn))] += 1
        return await real(fn, *args, **kwargs)

    conn._execute = counting  # type: ignore[method-assign]
    try:
        yield counted
    finally:
        conn._execute = real  # type: ignore[method-assign]

"""One backend object, several event loops: what calling `asyncio.run()` again needs.

A script or a notebook may use one TaskQueue across several `asyncio.run()` calls. Each
call makes a new event loop and closes it at the end, but what a backend holds belongs to
the loop that opened it: aiosqlite's thread hands each answer to the loop that asked (and
dies with "Event loop is closed" if that loop has gone: the next call would then wait
forever), an asyncpg pool lives on one loop, and so do group commit's tasks and futures.

So a backend remembers its loop, and the first call from another one *follows* it, once,
while the other calls from that loop wait for it: SQLite keeps its connection if the
thread survived (`survived`) and opens a new one on the file if not; PostgreSQL opens a
new pool (the data is on the server). Following is refused with `EventLoopError` while the
old loop still runs (in another thread: give each loop its own backend object), and when
an in-memory SQLite database died with its loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiosqlite

from sitq.backends.group_commit import GroupCommit
from sitq.errors import EventLoopError

#: How often a probe looks whether aiosqlite's thread is still alive (a loop change only).
THREAD_LOOK = 0.005


class LoopOwner:
    """The loop a backend's connection belongs to, and the one way to move it.

    Every operation calls `follow()` first: on the loop it knows, that returns at once.
    The first loop to use a connection owns it (`loop` may also be set on connecting).
    """

    def __init__(self, name: str, move: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._move = move
        self._moving: asyncio.Task[None] | None = None

    async def follow(self) -> None:
        """Move to the running loop; callers from it meanwhile wait for the same move. A
        failed move is tried again by the next call."""
        loop = asyncio.get_running_loop()
        if self.loop is loop:
            return
        if self.loop is None:
            self.loop = loop
            return
        moving = self._moving
        if moving is None or moving.get_loop() is not loop or moving.done():
            if self.loop.is_running():
                raise EventLoopError(
                    f"{self.name} belongs to an event loop that is still running (in another "
                    "thread): give each event loop its own backend object (and TaskQueue)"
                )
            moving = self._moving = loop.create_task(self._move_to(loop))
        await asyncio.shield(moving)  # a caller's timeout must not stop the move for others

    async def _move_to(self, loop: asyncio.AbstractEventLoop) -> None:
        await self._move()
        self.loop = loop


async def kept_or_reopened(
    conn: aiosqlite.Connection,
    is_memory: bool,
    reopen: Callable[[], Awaitable[aiosqlite.Connection]],
) -> aiosqlite.Connection:
    """The same SQLite connection if its thread survived the old loop, else a new one on
    the file; an in-memory database cannot be opened again, so that is an error."""
    if await survived(conn):
        return conn
    conn.stop()  # its thread is gone: nothing will run this, but nothing waits for it
    if is_memory:
        raise EventLoopError(
            "this in-memory SQLite database died with the event loop that opened it (a call "
            "was still out when `asyncio.run()` ended, e.g. after a timeout), and its tasks "
            "with it. To use a queue across several asyncio.run() calls, keep it in a file."
        )
    return await reopen()


async def survived(conn: aiosqlite.Connection) -> bool:
    """True once a no-op has made the round trip through aiosqlite's thread: every call the
    old loop left behind went before it, so none can kill the thread later. False if the
    thread died first (answering a call of a closed loop) or the connection is closed."""
    # aiosqlite's _execute (run a function in its thread) has no type hints
    probe = asyncio.ensure_future(conn._execute(_nothing))  # type: ignore[no-untyped-call]
    while not probe.done():
        await asyncio.wait([probe], timeout=THREAD_LOOK)
        if not probe.done() and not conn._thread.is_alive():
            probe.cancel()
            return False
    return not probe.cancelled() and probe.exception() is None


def _nothing() -> None:
    """The probe: runs in aiosqlite's thread and does nothing."""


async def drain_before_close(
    owner: LoopOwner, connection: Callable[[], aiosqlite.Connection], writes: GroupCommit
) -> bool:
    """Before a SQLite backend closes: follow the running loop and send the writes still
    queued (they are kept, not dropped). False if the connection died with its loop (an
    in-memory database): then there is nothing to send and no thread to say goodbye to."""
    try:
        await owner.follow()
    except EventLoopError:
        if connection()._thread.is_alive():
            raise
        return False
    await writes.drain()
    return True

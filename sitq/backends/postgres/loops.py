"""One backend object, several event loops: what calling `asyncio.run()` again needs.

A script or a notebook may use one TaskQueue across several `asyncio.run()` calls. Each
call makes a new event loop and closes it at the end, but an asyncpg pool (and the
listening connection) belongs to the loop that opened it. So the backend remembers its
loop, and the first call from another one *follows* it, once, while the other calls from
that loop wait for it: it opens a new pool (the data is on the server). Following is
refused with `EventLoopError` while the old loop still runs (in another thread: give each
loop its own backend object).

SQLite needs none of this: its connection belongs to a thread of its own, not to a loop
(`sitq.backends.sqlite.thread`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sitq.errors import EventLoopError


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

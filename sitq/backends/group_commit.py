"""Group commit: writes queued while the connection is busy travel together.

aiosqlite's thread runs one function at a time, and each trip to it costs two thread
wake-ups and, for a write, a commit (the pages it changed written to the WAL). While one
trip is out, the event loop keeps working: a producer prepares its next enqueue, a worker
finishes a task and has an outcome to store. Sent one by one, those would queue behind each
other in aiosqlite's thread anyway. Here they wait together instead, and when the trip
comes back they leave in the next one: one transaction, one commit, one wake-up.

Nothing waits on purpose (no fixed delay): a write made while the connection is idle
leaves at once, straight from its caller. Under load the groups grow by themselves; when
idle, each write goes alone.

Each write keeps its own outcome: if one of a group fails (a duplicate id, a constraint),
the whole transaction is rolled back and the group is run again one write at a time, so
only the failing write reports its error (see `sqlite_ops.run_together`).

A write runs even if its caller is cancelled while waiting (a timeout, `worker.stop()`),
exactly as a function handed to aiosqlite's thread does: an outcome is never lost
half-way, and no transaction is left open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sitq.backends.base import set_failed

#: One queued write: the operation (run in the connection's thread as
#: `operation(connection, *args)`), its arguments, and the future its caller awaits.
Queued = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]
#: What a trip gives back for each write of the group: (True, value) or (False, exception).
Outcome = tuple[bool, Any]
#: Sends one group in one trip and returns one outcome per write, in order.
SendGroup = Callable[[list[tuple[Callable[..., Any], tuple[Any, ...]]]], Awaitable[list[Outcome]]]

MAX_GROUP = 500  # writes per transaction: bounds how long one trip holds the write lock


class GroupCommit:
    """Queues writes and sends them in groups, one trip at a time."""

    def __init__(self, send: SendGroup) -> None:
        self._send = send
        self._queued: list[Queued] = []
        self._sender: asyncio.Task[None] | None = None
        self._alone: asyncio.Future[None] | None = None  # done when a lone write is back
        self.trips: int = 0  # groups sent so far: lets tests see the grouping

    async def write(self, operation: Callable[..., Any], *args: Any) -> Any:
        """Queue `operation(connection, *args)` and wait for its group to be committed."""
        if self._idle():
            return await self._write_alone(operation, args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((operation, args, future))
        if self._alone is None:  # else the lone write starts the sender when it is back
            self._start_sender()
        return await future  # cancelling the caller cancels only its wait, not the write

    def _idle(self) -> bool:
        sending = self._sender is not None and not self._sender.done()
        return not sending and self._alone is None and not self._queued

    async def _write_alone(self, operation: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Nothing else is out or waiting: send this write at once, from the caller, with
        no task between (a lone producer pays no more than a plain trip). The function is
        in aiosqlite's queue before this can be cancelled, so it runs either way."""
        self._alone = asyncio.get_running_loop().create_future()
        self.trips += 1
        try:
            [(ok, value)] = await self._send([(operation, args)])
        finally:
            self._alone.set_result(None)
            self._alone = None
            if self._queued:  # what queued up meanwhile goes next, together
                self._start_sender()
        if not ok:
            raise value
        return value

    def follow(self) -> None:
        """The event loop changed (`sitq.backends.loops`): the old loop's sender went with
        it; writes it left queued leave in the next trip, answered on this loop."""
        loop = asyncio.get_running_loop()
        self._sender = self._alone = None
        self._queued = [(op, args, loop.create_future()) for op, args, _ in self._queued]

    def _start_sender(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_all(), name="sitq-group-commit")

    async def drain(self) -> None:
        """Wait until every write queued so far has been sent and answered."""
        while not self._idle():
            if self._alone is not None:
                await asyncio.shield(self._alone)
            elif self._sender is not None and not self._sender.done():
                await asyncio.shield(self._sender)
            else:  # queued, its sender about to start
                await asyncio.sleep(0)

    async def _send_all(self) -> None:
        while self._queued:
            group, self._queued = self._queued[:MAX_GROUP], self._queued[MAX_GROUP:]
            self.trips += 1
            try:
                outcomes = await self._send([(op, args) for op, args, _ in group])
            except asyncio.CancelledError:  # the event loop is going away
                for _, _, future in group:
                    future.cancel()
                raise
            except Exception as exc:  # the trip itself failed: every write learns of it
                for _, _, future in group:
                    if not future.done():
                        set_failed(future, exc)
                continue
            for (_, _, future), (ok, value) in zip(group, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    set_failed(future, value)
            # One turn of the event loop before the next group: the callers this trip woke
            # usually write again at once (the next enqueue, the next settle), and those
            # writes should join the next group, not follow it in a trip of their own.
            await asyncio.sleep(0)

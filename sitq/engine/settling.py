"""The settle path: every outcome a worker stores goes through here, in batches.

Outcomes are written as they come, without a fixed delay: the first one is flushed at once,
and whatever finishes while that flush is in the database goes together in the next one
(one transaction, one round trip, however many). Under load that batches naturally; when
idle, each outcome is written immediately.

A busy worker sends its next claim along with the flush (`settle_and_claim`): what finished
goes back and what is next comes out in the same round trip.

A flush runs in its own asyncio task, so a caller that is cancelled while waiting (the
worker stopping, a Ctrl-C) does not cancel the write: the outcome is stored all the same.

A flush that fails (SQLite "database is locked" past busy_timeout, a full disk, PostgreSQL
"too many connections") loses nothing: its outcomes are kept and written again, with a
pause that doubles up to RETRY_MAX_PAUSE, for as long as `keep_trying` says the task's
lease is still ours (the worker keeps renewing it meanwhile). A finished task is thrown
away only when its lease has run out for good, and a storage error is never stored as the
task's error: the task's outcome is what was decided, or nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sitq.backends.base import Backend, ClaimedTask, ClaimRequest, Settlement, set_failed
from sitq.errors import DatabaseCorruptError, QueueClosedError

logger: logging.Logger = logging.getLogger("sitq.worker")
#: Pauses before writing failed outcomes again: the first, doubling up to the last.
RETRY_FIRST_PAUSE, RETRY_MAX_PAUSE = 0.05, 1.0
#: An outcome handed in, and the future its caller awaits.
Waiting = tuple[Settlement, "asyncio.Future[bool]"]


class Settler:
    """Collects settlements and writes them in batches; `settle` says whether the backend
    accepted one (False: its fencing token was stale, another worker owns the task)."""

    def __init__(
        self,
        backend: Backend,
        next_claim: Callable[[], ClaimRequest | None] = lambda: None,
        on_claimed: Callable[[list[ClaimedTask]], None] = lambda claimed: None,
        keep_trying: Callable[[str], bool] = lambda task_id: False,
    ) -> None:
        self.backend = backend
        #: Asked after a failed flush, for each of its outcomes' task ids: write it again
        #: (True: its lease is still ours), or give up and hand the error to its waiter.
        self.keep_trying = keep_trying
        #: Asked before each flush: a claim to send along (the worker's next tasks, in the
        #: same round trip), or None.
        self.next_claim = next_claim
        self.on_claimed = on_claimed
        self._pending: list[Waiting] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches: int = 0  # flushes so far: lets tests and benchmarks see the batching

    async def settle(self, settlement: Settlement) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((settlement, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all(), name="sitq-settle")
        return await future  # cancelling the caller cancels only its wait, not the write

    @property
    def flushing(self) -> bool:
        """True while outcomes are on their way (or about to be): a flush that leaves
        from now on asks for the worker's next claim itself."""
        return self._flusher is not None and not self._flusher.done()

    async def drain(self) -> None:
        """Wait until everything handed in so far is written."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush_all(self) -> None:
        pause = RETRY_FIRST_PAUSE
        while self._pending:
            batch, self._pending = self._pending, []
            self.batches += 1
            try:
                accepted = await self._write([s for s, _ in batch])
            except Exception as exc:
                self._pending = self._kept_after(batch, exc, pause) + self._pending
                if self._pending:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RETRY_MAX_PAUSE)
                continue
            pause = RETRY_FIRST_PAUSE
            for (_, future), ok in zip(batch, accepted, strict=True):
                if not future.done():
                    future.set_result(ok)

    def _kept_after(self, batch: list[Waiting], error: Exception, pause: float) -> list[Waiting]:
        """A flush failed: the outcomes whose lease is still ours are kept for the next
        try; the others' waiters learn of the error (the worker logs it)."""
        kept: list[Waiting] = []
        dropped: list[Waiting] = []
        # A closed backend stays closed and a damaged file stays damaged: only errors that
        # time can mend (a held lock, a full disk, too many connections) are waited out.
        heals = not isinstance(error, QueueClosedError | DatabaseCorruptError)
        for item in batch:
            (kept if heals and self.keep_trying(item[0].task_id) else dropped).append(item)
        for _, future in dropped:
            if not future.done():
                set_failed(future, error)
        if kept:
            logger.warning(
                "storing %d outcome(s) failed (%s: %s); kept, trying again in %.2gs",
                len(kept), type(error).__name__, error, pause,
            )  # fmt: skip
        return kept

    async def _write(self, settlements: list[Settlement]) -> list[bool]:
        claim = self.next_claim()
        if claim is None:
            return await self.backend.settle(settlements)
        claimed: list[ClaimedTask] = []
        try:
            accepted, claimed = await self.backend.settle_and_claim(settlements, claim)
        finally:
            self.on_claimed(claimed)  # also when it failed: the slots held for it free up
        return accepted

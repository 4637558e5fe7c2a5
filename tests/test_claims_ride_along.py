"""The next claim rides along with the outcomes: one transaction per turn, not two.

A busy worker hands back what finished and takes what is next in the same trip
(`Backend.settle_and_claim`, sent by `sitq.engine.pipeline`); its main loop claims on its
own only when no settle is on its way, and waits idle (`next_due_at`, `wait_for_change`)
only when a claim found nothing due. Tasks that arrive one by one, as a producer enqueues
them, are the case that tells: a main loop that claims before the tasks it just started
have settled sends claims of its own that find little, goes idle after each, and lets the
settles travel without a claim.

Real SQLite file and the worker's real loop; the backend counts the calls it is asked to
make through its public methods. The producer awaits each enqueue, so the tasks arrive
one at a time, and the test waits for the results (`gather`), never for time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path

import pytest

from sitq import SQLiteBackend, TaskQueue, Worker
from sitq.backends.base import ClaimedTask, ClaimRequest, Now, Settlement

pytestmark = pytest.mark.sqlite_only

ARRIVALS = 1_000
WAIT_AT_MOST = 120.0  # seconds: a bound for a hung worker, not a pause


async def one() -> int:
    return 1


class CountingBackend(SQLiteBackend):
    """A real SQLite backend that counts the calls a worker makes into it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: Counter[str] = Counter()

    async def claim(
        self,
        worker_id: str,
        limit: int,
        now: Now,
        lease_seconds: float,
        *,
        held: Collection[str] = (),
        default_budget: tuple[int, str] | None = None,
        ahead: int = 0,
        started: Sequence[tuple[str, int, float]] = (),
    ) -> list[ClaimedTask]:
        self.calls["claim alone"] += 1
        return await super().claim(worker_id, limit, now, lease_seconds, held=held,
                                   default_budget=default_budget, ahead=ahead,
                                   started=started)  # fmt: skip

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        self.calls["settle alone"] += 1
        return await super().settle(settlements)

    async def settle_and_claim(
        self, settlements: Sequence[Settlement], claim: ClaimRequest
    ) -> tuple[list[bool], list[ClaimedTask]]:
        self.calls["settle with a claim"] += 1
        return await super().settle_and_claim(settlements, claim)

    async def next_due_at(self) -> float | None:
        self.calls["idle wait"] += 1  # the main loop asks just before it waits idle
        return await super().next_due_at()


async def test_a_settle_carries_the_next_claim_when_tasks_arrive_one_by_one(
    db_path: Path,
) -> None:
    backend = CountingBackend(db_path)
    async with TaskQueue(backend) as queue, Worker(backend, concurrency=10):
        await queue.get_result(await queue.enqueue(one), timeout=WAIT_AT_MOST)  # warm up
        backend.calls.clear()
        ids = [await queue.enqueue(one) for _ in range(ARRIVALS)]
        results = await queue.gather(ids, timeout=WAIT_AT_MOST, progress=False)
    assert all(result is not None and result.value == 1 for result in results)
    calls = backend.calls
    print(f"\n{ARRIVALS:,} tasks arriving one by one: {dict(calls)}")
    with_claim, alone = calls["settle with a claim"], calls["settle alone"]
    # Before the fix: about 40% of the settles went alone, with as many claims of the main
    # loop's own and as many idle waits (a fifth of the tasks each).
    assert alone <= 0.02 * (with_claim + alone), calls
    assert calls["claim alone"] <= 0.02 * ARRIVALS, calls
    assert calls["idle wait"] <= 0.02 * ARRIVALS, calls

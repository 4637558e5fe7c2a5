"""The worker's path on PostgreSQL: claim, settle, and both in one statement.

These are the operations a busy worker makes over and over, so their round trips are its
speed: a claim is one statement (sql.CLAIM), a batch of outcomes is one (sql.SETTLE), and
a batch of outcomes with the next claim riding along is one too (sql.SETTLE_AND_CLAIM,
composed below from the other two): one trip and one commit for what took two of each.
A claim that came back short also reads the next due time, which the worker asks next
(`next_due_at`), so a worker woken for nothing pays one trip, not two.

The guarantees stay in the SQL: the fencing token is checked in the settle's UPDATE, a
claim takes rows with SKIP LOCKED and never touches a row the settle half of its
statement writes (`_settle_with_claim`), and a task with children is settled by
`postgres.deps`, which follows it down.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import asyncpg

from sitq.backends.base import ClaimedTask, ClaimRequest, Now, Settlement, read_now
from sitq.backends.postgres import deps, sql
from sitq.backends.postgres import rows as convert
from sitq.backends.postgres.link import Connection, PostgresLink
from sitq.clock import wall_clock_of
from sitq.task import TERMINAL, WAITING

logger: logging.Logger = logging.getLogger("sitq.backends.postgres")
#: A row of `sql.CLAIM` that only signals a spent lost lease of a task with children.
PARENT_SIGN = 2


def _shifted(statement: str, by: int) -> str:
    """`statement` with each parameter `$n` renumbered `$(n + by)`."""
    return re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + by}", statement)


#: SETTLE's sub-statements (for tasks without children), then CLAIM's.
_SETTLE_PART = sql.SETTLE.replace("$24::bool", "FALSE").rsplit("SELECT ord FROM settled", 1)[0]
_CLAIM_PART = _shifted(sql.CLAIM_STEPS, 23).strip().removeprefix("WITH")

# A busy worker's one trip: store a batch of outcomes (SETTLE, $1..$23, tasks without
# children only: those with children are settled again by `postgres.deps`) and make its
# next claim (CLAIM, its parameters moved to $24..$35), as one statement: one round trip
# and one commit, not two of each. Both halves read one snapshot, so the claim never
# touches a row the settle writes: the backend passes the settled ids among the held ones
# ($28: no takeover of them) and leaves them out of the starts to record ($33). The rows
# are CLAIM's, each then with the positions the settle accepted.
SETTLE_AND_CLAIM = f"{_SETTLE_PART.rstrip()},{_CLAIM_PART}" + sql.claim_rows(
    "$27", ",\n       (SELECT array_agg(ord) FROM settled) AS settled"
)


class ClaimsAndSettles(PostgresLink):
    """Claims, settles and lease renewals (`PostgresBackend` adds the rest)."""

    def _keep_next_due(self, next_due: float | None, changed: int) -> None:
        """Keep what a short claim found next due, for the `next_due_at` a worker asks
        next (so that costs no trip), unless an operation of ours that may make a task due
        ran meanwhile: one still under way, or one finished since the claim began
        (`changed`, read before it was sent), may have made one due that the claim's
        snapshot did not see. Any such operation begun later, and any NOTIFY, forgets it.
        (Another process's change that has not NOTIFYed yet is missed the same way by a
        query: the waiting worker hears it when it does.)"""
        if self._changing == 0 and self._changed == changed:
            self._next_due = (next_due,)

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
        """One statement records starts, takes over expired leases and claims due tasks
        (see sql.CLAIM).

        `now` is read just before it is sent: with SKIP LOCKED a claim never queues behind
        another worker's rows, so no wait for a lock can eat into the lease.
        """
        if limit <= 0 and not started:
            return []
        budget = default_budget or (None, None)
        held_ids = list(held)
        marks = start_columns(started)

        async def claim(conn: Connection) -> list[ClaimedTask]:
            changed, moment = self._changed, read_now(now)
            rows = await conn.fetch(sql.CLAIM, worker_id, moment, lease_seconds,
                                    max(limit, 0), held_ids, *budget,
                                    lease_clock(now, moment), limit - ahead,
                                    *marks)  # fmt: skip
            claimed, signs = self._claimed(rows, moment, limit, changed)
            if signs:  # spent lost leases of tasks with children
                claimed += await deps.end_spent_parents(conn, worker_id, moment, signs,
                                                        held_ids, budget[0],
                                                        lease_clock(now, moment))  # fmt: skip
            return claimed

        return await self._run(claim, makes_due=False)

    def _claimed(
        self, rows: list[Any], moment: float, limit: int, changed: int
    ) -> tuple[list[ClaimedTask], int]:
        """The tasks in a claim's rows (sql.CLAIM's, or SETTLE_AND_CLAIM's), and how many
        spent lost leases of tasks with children it only signalled (`postgres.deps` ends
        them). A claim that came back short keeps what it saw next due, for `next_due_at`
        (`changed`: see `_keep_next_due`)."""
        batch = [row for row in rows if row[0] is not None]  # one row of NULLs: none
        claimed = [convert.claimed(row, moment) for row in batch if row[0] != PARENT_SIGN]
        signs = len(batch) - len(claimed)
        self._next_due = None  # an older claim's, if it was never asked for
        if not signs and len(batch) < limit:
            self._keep_next_due(rows[0][convert.NEXT_DUE], changed)
        return claimed, signs

    async def settle_and_claim(
        self, settlements: Sequence[Settlement], claim: ClaimRequest
    ) -> tuple[list[bool], list[ClaimedTask]]:
        """One statement (SETTLE_AND_CLAIM): one round trip and one commit where a settle
        and then a claim took two of each; a busy worker's every trip is one of these.

        The two halves stay apart where that matters. A task settled twice in the batch
        needs its rounds in order, so that batch goes the two-statement way (`settle`, then
        the claim). So does one whose statement fails (a deadlock, say): the claim must not
        cost the outcomes their place, and a claim that fails once they are stored ("too many
        connections") claims nothing, since raising would make the caller write the stored
        outcomes again and see them refused."""
        if len(convert.rounds(settlements)) == 1:
            try:
                accepted, claimed, signs = await self._settle_with_claim(settlements, claim)
            except asyncpg.PostgresError as exc:
                logger.warning("settling with a claim failed (%s); settling alone", exc)
            else:
                await self._settle_refused(settlements, range(len(settlements)), accepted)
                await self._announce(settlements, accepted)
                if signs:  # its own transaction: a failure costs the claim those only
                    claimed += await self._end_spent_parents(claim, signs)
                return accepted, claimed
        accepted = await self.settle(settlements)
        try:
            claimed = await self.claim(claim.worker_id, claim.limit, claim.now,
                                       claim.lease_seconds, held=claim.held,
                                       default_budget=claim.default_budget,
                                       ahead=claim.ahead, started=claim.started)  # fmt: skip
        except Exception as exc:
            logger.warning("a claim sent along with a settle failed: %s", exc)
            claimed = []
        return accepted, claimed

    async def _settle_with_claim(
        self, settlements: Sequence[Settlement], claim: ClaimRequest
    ) -> tuple[list[bool], list[ClaimedTask], int]:
        """SETTLE_AND_CLAIM, run again for what is not stored yet if the connection is
        lost (as `_settle_round`); its tasks with children are left refused, for
        `_settle_refused`, and the spent lost leases of tasks with children it signalled
        are counted, for `_end_spent_parents`. The settled tasks count as held, and their
        starts are not recorded: the claim half must not touch a row the settle half writes."""
        ids = {s.task_id for s in settlements}
        held = [*claim.held, *(ids - set(claim.held))]
        starts = [start for start in claim.started if start[0] not in ids]
        marks = start_columns(starts)
        budget = claim.default_budget or (None, None)
        stored_before: set[int] = set()

        async def store_and_claim(conn: Connection) -> tuple[list[bool], list[ClaimedTask], int]:
            rest = [i for i in range(len(settlements)) if i not in stored_before]
            rows = [convert.settle_row(settlements[i]) for i in rest]
            columns = [list(column) for column in zip(*rows, strict=True)] or [[]] * 23
            changed, moment = self._changed, read_now(claim.now)
            found = await conn.fetch(SETTLE_AND_CLAIM, *columns, claim.worker_id, moment,
                                     claim.lease_seconds, max(claim.limit, 0), held, *budget,
                                     lease_clock(claim.now, moment),
                                     claim.limit - claim.ahead, *marks)  # fmt: skip
            done = {rest[position - 1] for position in found[0][-1] or ()}
            claimed, signs = self._claimed(found, moment, claim.limit, changed)
            accepted = [i in done or i in stored_before for i in range(len(settlements))]
            return accepted, claimed, signs

        async def settled_already(conn: Connection) -> None:
            stored_before.update(await self._stored_already(conn, settlements))

        # Its own settle's tasks that wait again are not in the claim's snapshot: a claim
        # with those keeps no next due time (`_keep_next_due`). Else none becomes due.
        waits = any(s.status in WAITING for s in settlements)
        return await self._run(store_and_claim, again=settled_already, makes_due=waits)

    async def _end_spent_parents(self, claim: ClaimRequest, signs: int) -> list[ClaimedTask]:
        """`deps.end_spent_parents` for a claim that went with a settle, on its own: its
        outcomes are stored, so a failure here only leaves those leases to a later claim."""
        budget = claim.default_budget or (None, None)
        held = list(claim.held)

        async def end(conn: Connection) -> list[ClaimedTask]:
            moment = read_now(claim.now)
            clock = lease_clock(claim.now, moment)
            return await deps.end_spent_parents(conn, claim.worker_id, moment, signs, held,
                                                budget[0], clock)  # fmt: skip

        try:
            return await self._run(end)
        except Exception as exc:
            logger.warning("ending spent lost leases with a settle failed: %s", exc)
            return []

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        if not settlements:
            return []
        accepted = [False] * len(settlements)
        for batch in convert.rounds(settlements):  # one round unless a task is settled twice
            for position, ok in zip(batch, await self._settle_round(settlements, batch),
                                    strict=True):  # fmt: skip
                accepted[position] = ok
            await self._settle_refused(settlements, batch, accepted)
        await self._announce(settlements, accepted)
        return accepted

    async def _settle_refused(
        self, settlements: Sequence[Settlement], batch: Iterable[int], accepted: list[bool]
    ) -> None:
        """The settlements of `batch` refused so far (stale, or a task with children) are
        tried again following each task to its children (`postgres.deps`)."""
        refused = [i for i in batch if not accepted[i]]
        if refused:
            for position, ok in zip(refused, await self._settle_round(
                    settlements, refused, parents=True), strict=True):  # fmt: skip
                accepted[position] = ok

    async def _announce(self, settlements: Sequence[Settlement], accepted: list[bool]) -> None:
        """Outcomes stored: tasks that wait again (a retry) are work for every worker."""
        waits_again = any(ok and s.status in WAITING for s, ok in zip(settlements, accepted,
                                                                       strict=True))  # fmt: skip
        if waits_again:
            await self._run(self._notify_work)
            self.work_signal.ring()
        self.settle_signal.ring()

    async def _stored_already(
        self, conn: Connection, settlements: Sequence[Settlement]
    ) -> set[int]:
        """After a connection lost during COMMIT: the settlements that were stored. A row
        whose token is still ours and that no longer runs can only have been settled by us."""
        rows = await conn.fetch(sql.SETTLED_WITH, [s.task_id for s in settlements])
        ours = {(row[0], row[1]) for row in rows}
        return {i for i, s in enumerate(settlements) if (s.task_id, s.token) in ours}

    async def _settle_round(
        self, settlements: Sequence[Settlement], batch: list[int], *, parents: bool = False
    ) -> list[bool]:
        """One statement, or with `parents` (for the rows the first refused: tasks with
        children, and stale tokens) a transaction that follows each settled task to its
        children (`postgres.deps`)."""
        chosen = [settlements[i] for i in batch]
        stored_before: set[int] = set()  # found stored by an attempt whose COMMIT was lost

        async def store(conn: Connection) -> list[bool]:
            rest = [i for i in range(len(chosen)) if i not in stored_before]
            rows = [convert.settle_row(chosen[i]) for i in rest]
            columns = [list(column) for column in zip(*rows, strict=True)]
            found = await conn.fetch(sql.SETTLE, *columns, parents) if rest else []
            done = {rest[row[0] - 1] for row in found}  # WITH ORDINALITY counts from 1
            if parents:
                for i in sorted(done):
                    if chosen[i].status in TERMINAL:
                        await deps.follow(conn, [chosen[i].task_id], chosen[i].now)
            return [i in done or i in stored_before for i in range(len(chosen))]

        async def settle(conn: Connection) -> list[bool]:
            if not parents:
                return await store(conn)
            async with conn.transaction():
                accepted = await store(conn)
                await self._notify_work(conn)  # children it released, if any
                return accepted

        async def settled_already(conn: Connection) -> None:
            # Those are done; `settle` then runs for the others only.
            stored_before.update(await self._stored_already(conn, chosen))

        # Only tasks that wait again, and children a settled parent releases, become due.
        waits = parents or any(s.status in WAITING for s in chosen)
        return await self._run(settle, again=settled_already, makes_due=waits)

    async def renew_leases(
        self, leases: Sequence[tuple[str, int]], now: Now, lease_seconds: float
    ) -> set[str]:
        if not leases:
            return set()
        ids = [task_id for task_id, _ in leases]
        tokens = [token for _, token in leases]

        async def renew(conn: Connection) -> set[str]:
            async with conn.transaction():
                await conn.execute(sql.LOCK_LEASES, ids)
                at = lease_clock(now, read_now(now))  # after the rows are ours
                renewed = {row[0] for row in await conn.fetch(sql.RENEW, lease_seconds, ids,
                                                              tokens, at)}  # fmt: skip
            return set(ids) - renewed

        return await self._run(renew, makes_due=False)


def start_columns(started: Sequence[tuple[str, int, float]]) -> list[list[Any]]:
    """The starts to record (id, token, when), as the three arrays a claim statement takes."""
    return [list(column) for column in zip(*started, strict=True)] or [[], [], []]


def lease_clock(now: Now, moment: float) -> float | None:
    """The lease clock's time to send: None (the server's clock) when `now` is real time,
    else `moment`, the virtual time read from it (see `postgres.backend`'s docstring)."""
    return None if wall_clock_of(now) is not None else moment

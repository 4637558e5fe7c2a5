"""Task dependencies on PostgreSQL: storing a task's parents, and following a parent's
change down to its children, in the transaction that made the change.

Every rule is `sitq.policy.state.after_parents`; these functions read the rows it needs and
store its verdict. Many workers settle at once here, so the order of locks matters:

- a new child locks its parents (and marks them `has_children`) before it reads their
  status: a parent settling at that moment either committed first (the child reads its
  outcome) or waits for the child's commit, and then sees the child;
- following a change, a child's row is locked before its parents are read, in a statement
  of its own: of two parents of one child settling at once, the second waits for the
  first to commit, then reads both outcomes (no child stays blocked behind two successes);
- a parent's settle is such a transaction only for a row marked `has_children`: every
  other settle stays the one statement it was (`sql.SETTLE`, the `$24` flag).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sitq.backends.base import ClaimedTask, NewTask
from sitq.backends.postgres import rows as convert
from sitq.backends.postgres.sql import CLAIM_RETURNING, LOST_END, lease_clock
from sitq.errors import TaskNotFoundError
from sitq.policy.state import Parent, ParentsVerdict, after_parents, waits_on_parents
from sitq.task import TaskStatus

#: The schema's part for dependencies (in `sql.SCHEMA`, version 2).
SCHEMA = """
ALTER TABLE sitq_tasks ADD COLUMN IF NOT EXISTS has_children BOOLEAN NOT NULL DEFAULT FALSE;
CREATE TABLE IF NOT EXISTS sitq_dependencies (
    child_id  TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    place     INTEGER NOT NULL,                -- the parent's place in the child's list
    PRIMARY KEY (child_id, parent_id)
);
CREATE INDEX IF NOT EXISTS sitq_dependencies_parent ON sitq_dependencies (parent_id);
"""

#: Lock the named parents (in id order: two enqueues never deadlock on them), mark them
#: as having children, and read their status and error ($1 ids).
LOCK_PARENTS = """
UPDATE sitq_tasks AS t SET has_children = TRUE
  FROM (SELECT id FROM sitq_tasks WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE) AS p
 WHERE t.id = p.id
RETURNING t.id, t.status, t.error
"""

ADD_TASK = """
INSERT INTO sitq_tasks (id, name, payload, status, priority, enqueued_at, due_at,
                        max_attempts, retry_policy)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""

ADD_DEPENDENCIES = """
INSERT INTO sitq_dependencies (child_id, parent_id, place)
SELECT $1, parent_id, place - 1 FROM unnest($2::text[]) WITH ORDINALITY AS p(parent_id, place)
ON CONFLICT DO NOTHING
"""

PARENT_IDS = "SELECT parent_id FROM sitq_dependencies WHERE child_id = $1 ORDER BY place"

#: A task's parents in the order it named them, with their status (NULL: gone) and error.
PARENTS_OF = """
SELECT d.parent_id, p.status, p.error FROM sitq_dependencies AS d
  LEFT JOIN sitq_tasks AS p ON p.id = d.parent_id
 WHERE d.child_id = $1 ORDER BY d.place
"""

#: The children of tasks $1, locked (in id order), with what `after_parents` reads.
LOCK_CHILDREN = """
SELECT id, status, error_type, error, due_at FROM sitq_tasks
 WHERE id IN (SELECT child_id FROM sitq_dependencies WHERE parent_id = ANY($1::text[]))
 ORDER BY id FOR UPDATE
"""

SET_VERDICT = """
UPDATE sitq_tasks SET status = $2, finished_at = $3, error = $4, error_type = $5,
       traceback = NULL
 WHERE id = $1 AND status = $6
"""

STATUS_AND_ERROR_TYPE = "SELECT status, error_type FROM sitq_tasks WHERE id = $1"

#: `sql.CLAIM`'s `ended`, for the tasks with children it leaves alone and signals (its
#: `parent` rows; `state.LOST_WHEN_SPENT`), with their lost attempts: $1 worker, $2 now,
#: $3 limit, $4 held ids, $5 the default budget, $6 the lease clock.
END_SPENT_PARENTS = f"""
WITH ended AS (
    UPDATE sitq_tasks AS t SET
        lost_worker_id = worker_id, lost_started_at = started_at, lost_scheduled_for = due_at,
        due_at = lease_expires_at,{LOST_END}
    WHERE seq IN (
        SELECT seq FROM sitq_tasks
         WHERE status = 'running' AND has_children AND lease_expires_at < {lease_clock("$6")}
           AND id <> ALL($4::text[]) AND started_at IS NOT NULL
           AND COALESCE(attempts - retry_base >= COALESCE(max_attempts, $5::int), FALSE)
         ORDER BY lease_expires_at LIMIT $3
           FOR UPDATE SKIP LOCKED)
    {CLAIM_RETURNING.rstrip()}, t.status AS decided
), lost AS (
    INSERT INTO sitq_attempts (task_id, task_name, attempt, worker_id, scheduled_for,
                               started_at, finished_at, outcome, error_type, error_message)
    SELECT id, name, attempts, lost_worker_id, lost_scheduled_for, lost_started_at, due_at,
           'worker_lost', 'WorkerLost', 'worker ' || lost_worker_id || ' stopped renewing its lease'
      FROM ended
)
SELECT 0 AS taken_first, * FROM ended
"""


async def add_dependent_tasks(
    conn: Any, tasks: Sequence[NewTask], parents: Sequence[tuple[str, ...]]
) -> None:
    """Insert `tasks`, each after its parents, inside the caller's transaction: an unknown
    parent id (TaskNotFoundError) rolls it all back."""
    for task, named in zip(tasks, parents, strict=True):
        rows = await conn.fetch(LOCK_PARENTS, list(named)) if named else []
        found = {row[0]: (TaskStatus(row[1]), row[2]) for row in rows}
        missing = [p for p in named if p not in found]
        if missing:
            raise TaskNotFoundError(
                f"after= names {', '.join(map(repr, missing))}, which no task of this queue "
                "has: a task can only wait for tasks enqueued before it (ids from enqueue())"
            )
        await conn.execute(ADD_TASK, *convert.task_row(task))
        await conn.execute(ADD_DEPENDENCIES, task.task_id, list(named))
        listed: list[Parent] = [(p, *found[p]) for p in named]
        verdict = after_parents(listed, task.due_at, task.enqueued_at)
        await store(conn, task.task_id, TaskStatus(task.status), verdict, task.enqueued_at)


async def parents_of(conn: Any, task_id: str) -> list[Parent]:
    return [
        (parent, None if status is None else TaskStatus(status), error)
        for parent, status, error in await conn.fetch(PARENTS_OF, task_id)
    ]


async def store(
    conn: Any, task_id: str, old: TaskStatus, verdict: ParentsVerdict, now: float
) -> None:
    await conn.execute(SET_VERDICT, task_id, str(verdict.status),
                       now if verdict.finished else None, verdict.error, verdict.error_type,
                       str(old))  # fmt: skip


async def follow(conn: Any, changed: Sequence[str], now: float) -> None:
    """Tasks `changed` reached a new state (inside the transaction that changed them):
    decide again each child that waits on its parents, then the children of those that
    changed, level by level."""
    todo = list(changed)
    while todo:
        children = await conn.fetch(LOCK_CHILDREN, todo)
        todo = []
        for child_id, status, error_type, error, due_at in children:
            old = TaskStatus(status)
            if not waits_on_parents(old, error_type):
                continue
            verdict = after_parents(await parents_of(conn, child_id), due_at, now)
            if (verdict.status, verdict.error) != (old, error):
                await store(conn, child_id, old, verdict, now)
                todo.append(child_id)


async def requeue_verdict(conn: Any, task_id: str, now: float) -> ParentsVerdict | None:
    """For `state.on_requeue`: what the parents of a task cancelled for a parent say now."""
    row = await conn.fetchrow(STATUS_AND_ERROR_TYPE, task_id)
    if row is None or not waits_on_parents(TaskStatus(row[0]), row[1]):
        return None
    return after_parents(await parents_of(conn, task_id), now, now)


async def end_spent_parents(
    conn: Any, worker_id: str, moment: float, limit: int, held: list[str],
    default_max: int | None, clock: float | None,
) -> list[ClaimedTask]:  # fmt: skip
    """End expired leases of tasks with children whose budget is spent, as the claim ends
    the others, and follow each to its children: all in one transaction. (The claim only
    signals them: its one statement cannot lock a child before reading its parents.)"""
    async with conn.transaction():
        rows = await conn.fetch(END_SPENT_PARENTS, worker_id, moment, limit, held,
                                default_max, clock)  # fmt: skip
        await follow(conn, [row[1] for row in rows], moment)
    return [convert.claimed(row, moment) for row in rows]

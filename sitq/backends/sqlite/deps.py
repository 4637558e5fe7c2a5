"""Task dependencies on SQLite: storing a task's parents, and following a parent's change
down to its children, in the transaction that made the change.

Every rule is `sitq.policy.state.after_parents`; these functions read the rows it needs and
store its verdict. SQLite has one writer at a time, so what they read cannot change before
they write: a child enqueued while its parent settles is decided after the settle, or the
settle sees the child.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from sitq.backends.base import NewTask
from sitq.backends.sqlite import sql
from sitq.errors import TaskNotFoundError
from sitq.policy.state import Parent, ParentsVerdict, after_parents, waits_on_parents
from sitq.task import TaskStatus

#: The tasks of these ids (a JSON list) that exist, with their status and error.
TASKS_NAMED = (
    "SELECT id, status, error FROM sitq_tasks WHERE id IN (SELECT value FROM json_each(?))"
)
PARENT_IDS = "SELECT parent_id FROM sitq_dependencies WHERE child_id = ? ORDER BY place"
ADD_DEPENDENCY = "INSERT OR IGNORE INTO sitq_dependencies VALUES (?, ?, ?)"

#: A task's parents in the order it named them, with their status (NULL: gone) and error.
PARENTS_OF = """
SELECT d.parent_id, p.status, p.error FROM sitq_dependencies AS d
  LEFT JOIN sitq_tasks AS p ON p.id = d.parent_id
 WHERE d.child_id = ? ORDER BY d.place
"""

#: The children of a task, with what `state.waits_on_parents` and `after_parents` read.
CHILDREN_OF = """
SELECT c.id, c.status, c.error_type, c.error, c.due_at FROM sitq_dependencies AS d
  JOIN sitq_tasks AS c ON c.id = d.child_id
 WHERE d.parent_id = ? ORDER BY c.seq
"""

#: Store a child's new verdict, if its status is still the one it was decided from.
SET_VERDICT = """
UPDATE sitq_tasks SET status = :status, finished_at = :finished_at, error = :error,
       error_type = :error_type, traceback = NULL
 WHERE id = :task_id AND status = :old
"""


def add_dependent_tasks(
    conn: sqlite3.Connection, tasks: list[NewTask], parents: list[tuple[str, ...]]
) -> None:
    """Insert `tasks`, each after its parents (ids already stored, or earlier in `tasks`);
    run inside a transaction (`ops.add_dependent_tasks`), so that an unknown parent id
    (TaskNotFoundError) stores nothing."""
    for task, named in zip(tasks, parents, strict=True):
        found = parents_of_ids(conn, named)
        missing = [p for p, status, _ in found if status is None]
        if missing:
            raise TaskNotFoundError(
                f"after= names {', '.join(map(repr, missing))}, which no task of this queue "
                "has: a task can only wait for tasks enqueued before it (ids from enqueue())"
            )
        conn.execute(sql.INSERT_TASK, task[: sql.FULL_COLUMNS])  # no unique key (options)
        conn.executemany(
            ADD_DEPENDENCY, [(task.task_id, p, place) for place, p in enumerate(named)]
        )
        verdict = after_parents(found, task.due_at, task.enqueued_at)
        store(conn, task.task_id, TaskStatus(task.status), verdict, task.enqueued_at)


def parents_of_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> list[Parent]:
    rows = conn.execute(TASKS_NAMED, (json.dumps(list(ids)),)).fetchall()
    found = {row[0]: (TaskStatus(row[1]), row[2]) for row in rows}
    return [(p, *found.get(p, (None, None))) for p in ids]


def parents_of(conn: sqlite3.Connection, task_id: str) -> list[Parent]:
    return [
        (parent, None if status is None else TaskStatus(status), error)
        for parent, status, error in conn.execute(PARENTS_OF, (task_id,))
    ]


def store(
    conn: sqlite3.Connection, task_id: str, old: TaskStatus, verdict: ParentsVerdict, now: float
) -> None:
    conn.execute(SET_VERDICT, {
        "task_id": task_id, "old": str(old), "status": str(verdict.status),
        "finished_at": now if verdict.finished else None, "error": verdict.error,
        "error_type": verdict.error_type,
    })  # fmt: skip


def follow(conn: sqlite3.Connection, changed: Sequence[str], now: float) -> None:
    """Tasks `changed` reached a new state: decide again each child that waits on its
    parents (`state.waits_on_parents`), then the children of each child that changed."""
    todo = list(changed)
    while todo:
        parent_id = todo.pop()
        for child_id, status, error_type, error, due_at in conn.execute(
            CHILDREN_OF, (parent_id,)
        ).fetchall():
            old = TaskStatus(status)
            if not waits_on_parents(old, error_type):
                continue
            verdict = after_parents(parents_of(conn, child_id), due_at, now)
            if (verdict.status, verdict.error) != (old, error):
                store(conn, child_id, old, verdict, now)
                todo.append(child_id)


def requeue_verdict(conn: sqlite3.Connection, task_id: str, now: float) -> ParentsVerdict | None:
    """For `state.on_requeue`: what the parents of a task cancelled for a parent say now
    (None for any other task: it goes back to the queue as usual)."""
    row = conn.execute(
        "SELECT status, error_type FROM sitq_tasks WHERE id = ?", (task_id,)
    ).fetchone()
    if row is None or not waits_on_parents(TaskStatus(row[0]), row[1]):
        return None
    return after_parents(parents_of(conn, task_id), now, now)

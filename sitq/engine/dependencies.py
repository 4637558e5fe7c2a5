"""Dependencies on the client side: tasks that wait for others, and chains of them.

`queue.with_options(after=[a, b]).enqueue(f)` stores `f` *blocked*: no worker claims it
until `a` and `b` have both succeeded. If one of them fails for good or is cancelled, `f` is
cancelled too, with an error naming that parent, and so are the tasks waiting for `f`, in
the same transaction: nothing waits forever. `queue.chain(call(a), call(b), call(c))` is
the common case, each step after the one before, enqueued all or none.

A child can only name tasks that exist already (or, in a chain, steps before it), so a
cycle cannot be written down. Its parents' results are the parents' own: a step reads one
with `await queue.get_result(parent_id)` (a finished task's result comes back at once),
or, inside a worker, `await current_task().parent_results()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sitq.backends.base import Backend, NewTask
from sitq.backends.dependency_store import DependencyStore
from sitq.errors import InvalidOptionError, TaskNotFoundError
from sitq.task import Result
from sitq.wire.serialization import Serializer


async def add_after(
    backend: Backend, rows: Sequence[NewTask], after: tuple[str, ...], chained: bool
) -> None:
    """Store `rows`, each after the tasks in `after`; `chained`: the first row after
    `after`, every later row after the row before it."""
    if not isinstance(backend, DependencyStore):
        raise InvalidOptionError(
            f"{type(backend).__name__} cannot store dependencies (after=, chain): it lacks "
            "add_dependent_tasks; SQLiteBackend and PostgresBackend have it"
        )
    parents = [after] * len(rows)
    if chained:
        parents[1:] = [(row.task_id,) for row in rows[:-1]]
    await backend.add_dependent_tasks(rows, parents)


async def parent_results(
    backend: Backend, serializer: Serializer, task_id: str
) -> list[Result[Any]]:
    """The results of a task's parents, in the order it named them (`TaskContext.
    parent_results`: a child runs once they all succeeded, so each holds its value)."""
    if not isinstance(backend, DependencyStore):
        return []
    ids = await backend.parents_of(task_id)
    found = await backend.get_tasks(ids)
    gone = [i for i in ids if i not in found]
    if gone:
        raise TaskNotFoundError(f"parent task(s) {gone} of task {task_id} are gone (pruned)")
    return [Result.decoded(found[i], serializer) for i in ids]

"""What a backend offers for task dependencies, beside the `Backend` protocol.

An optional capability, in its own protocol: both of sitq's backends have it
(`sitq.backends.sqlite.deps`, `sitq.backends.postgres.deps`), and `sitq.engine.dependencies`
checks for it before it enqueues a task `after=` others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sitq.backends.base import NewTask


@runtime_checkable
class DependencyStore(Protocol):
    """What a backend offers for task dependencies (`with_options(after=...)`, `chain`):
    both of sitq's backends do; the queue refuses `after=` on a backend without it."""

    async def add_dependent_tasks(
        self, tasks: Sequence[NewTask], parents: Sequence[tuple[str, ...]]
    ) -> None:
        """Insert `tasks` atomically, each after its own parents (ids stored already, or of
        a task earlier in `tasks`): all or nothing, TaskNotFoundError for an unknown id.

        Each task's status is `state.after_parents` of its parents, read in the same
        transaction (blocked, waiting, or cancelled naming its parent). From then on, every
        change of a parent (settle, cancel, requeue, a claim that ends a lost lease) decides
        its waiting children again in the transaction that made the change."""
        ...

    async def parents_of(self, task_id: str) -> list[str]:
        """The ids a task was enqueued after, in the order it named them."""
        ...

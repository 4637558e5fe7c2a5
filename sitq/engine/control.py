"""Inspecting and repairing a queue: what a person does to it besides enqueueing.

`TaskQueue` inherits these from `QueueControl`: reading a task's row, its status and
history, the counts; listing, requeueing and purging dead letters; pruning finished tasks;
cancelling. None of them is on a task's own path (enqueue, run, result: `sitq.engine.queue`),
and each goes to the backend in one call. Which moves are allowed is `sitq.policy.state`'s.
"""

from __future__ import annotations

from typing import Any

from sitq.backends.base import Backend
from sitq.clock import Clock
from sitq.errors import InvalidOptionError, TaskNotFoundError, TaskStateError
from sitq.overview import QueueSummary
from sitq.policy import state
from sitq.task import TERMINAL, History, Result, TaskInfo, TaskStatus, check_task_id


class QueueControl:
    """Inspect and repair methods of `sitq.engine.queue.TaskQueue` (see the module doc)."""

    # Set by TaskQueue; declared here for the type checker.
    backend: Backend
    clock: Clock

    async def _ready(self) -> None:
        raise NotImplementedError

    def _result(self, info: TaskInfo) -> Result[Any]:
        raise NotImplementedError

    # -- inspecting ------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> TaskInfo:
        """The task's full row (status, attempts, progress...); TaskNotFoundError if none."""
        check_task_id(task_id)
        await self._ready()
        found = await self.backend.get_tasks([task_id])
        if task_id not in found:
            raise TaskNotFoundError(
                f"no task with id {task_id!r} in {self.backend!r}; ids come from enqueue()"
            )
        return found[task_id]

    async def status(self, task_id: str) -> TaskStatus:
        """The task's current TaskStatus; TaskNotFoundError for an unknown id."""
        return (await self.get_task(task_id)).status

    async def counts(self) -> dict[TaskStatus, int]:
        """How many tasks are in each state (every state listed, zeros included)."""
        await self._ready()
        return await self.backend.counts()

    async def summary(self) -> QueueSummary:
        """`counts()` (and the schedules, if any) as an object that shows as a table in
        Jupyter."""
        counts = await self.counts()
        return QueueSummary(counts, tuple(await self.backend.list_schedules()))

    async def history(self, task_id: str | None = None) -> History:
        """Attempt records, oldest first: of one task, or of every task (a list that
        shows as a table in Jupyter). A purged task's history stays readable."""
        if task_id is not None:
            check_task_id(task_id)
        await self._ready()
        records = await self.backend.attempts(task_id)
        if task_id is not None and not records:
            await self.get_task(task_id)  # an unknown id is an error, not "no attempts yet"
        return History(records)

    # -- dead letters and control -----------------------------------------------------------

    async def dead_letters(self) -> list[Result[Any]]:
        """Tasks that failed for good, with their error, traceback and attempt count."""
        await self._ready()
        rows = await self.backend.list_tasks(state.DEAD_LETTERS)
        return [self._result(info) for info in rows]

    async def requeue(self, task_id: str) -> None:
        """Give a failed (or cancelled) task a fresh run with a fresh retry budget.

        Its attempt history is kept; new attempts continue the numbering. Tasks cancelled
        because it failed wait for it again (blocked); a task cancelled for a parent comes
        back once no parent is failed or cancelled. While another unfinished task holds its
        unique key it stays as it is: UniqueKeyTakenError names that task.
        """
        before = await self.get_task(task_id)
        old = await self.backend.requeue(task_id, self.clock.now())
        if state.on_requeue(old) is None:
            raise TaskStateError(
                f"task {task_id} is {old}: only failed or cancelled tasks can be requeued"
            )
        if state.waits_on_parents(old, before.error_type) and (info := await self.get_task(
                task_id)).status is old:  # fmt: skip
            raise TaskStateError(
                f"task {task_id} waits on its parents and stays {old}: {info.error}"
            )

    async def purge_dead_letters(self) -> int:
        """Delete every dead letter (their attempt history stays); return how many."""
        await self._ready()
        return await self.backend.purge(state.PURGEABLE)

    async def prune(self, older_than: float, *, batch: int = 500) -> int:
        """Delete succeeded and cancelled tasks that finished more than `older_than`
        seconds ago, with their attempt records; return how many. Dead letters stay until
        `purge_dead_letters()`. Workers do this by themselves (`Worker(retention=...)`)."""
        if (
            isinstance(older_than, bool)
            or not isinstance(older_than, int | float)
            or not (0 <= older_than < float("inf"))
        ):
            raise InvalidOptionError(f"older_than must be seconds >= 0, got {older_than!r}")
        await self._ready()
        total = 0
        while pruned := await self.backend.prune(older_than, self.clock.now, batch):
            total += pruned
        return total

    async def cancel(self, task_id: str) -> bool:
        """Cancel a waiting task now, or ask a running one to stop.

        Returns True if the task was waiting (now cancelled) or running (its worker
        cancels it at its next heartbeat; an async task stops, a thread cannot). Returns
        False if it had already finished.
        """
        await self.get_task(task_id)
        old = await self.backend.cancel(task_id, self.clock.now())
        return old is not None and old not in TERMINAL

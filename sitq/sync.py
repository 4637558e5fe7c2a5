"""SyncTaskQueue: the TaskQueue API for plain (non-async) code.

`SyncTaskQueue` has the same methods as `TaskQueue`, without `await`. It runs a private
event loop in a daemon thread and hands each call to that loop with
`asyncio.run_coroutine_threadsafe`, then blocks until the answer comes back. It never
touches the caller's event loop, so it works the same in a plain script and in a Jupyter
cell whose kernel already runs a loop, with no nest-asyncio patch.

    with SyncTaskQueue(SQLiteBackend("queue.db")) as queue:
        worker = queue.worker()
        worker.start()                      # runs in the background, on the private loop
        task_id = queue.enqueue(pow, 2, 10)
        print(queue.get_result(task_id, timeout=5).value)   # 1024
    # leaving the block stops the worker, closes the backend and ends the thread

`queue.worker(...)` gives a worker on the same loop and backend object, so it hears about
new work at once. Give a SyncTaskQueue a backend object of its own: the backend's
connection and signals belong to the private loop. Several threads may share one
SyncTaskQueue: their calls run side by side as coroutines on its loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, overload

from sitq.backends.base import Backend
from sitq.clock import Clock
from sitq.engine.queue import DEFAULT_MAX_PAYLOAD, OptionsView, P, R, TaskQueue
from sitq.engine.schedules import ScheduleKeywords
from sitq.engine.worker import Worker
from sitq.errors import QueueClosedError
from sitq.options import NO_OPTIONS, OptionValues, TaskOptions
from sitq.overview import QueueSummary, ScheduleInfo, Schedules
from sitq.task import History, Result, TaskId, TaskInfo, TaskStatus
from sitq.views.progress import ProgressBar
from sitq.wire.serialization import Serializer, TaskCall

if TYPE_CHECKING:
    from sitq.views.live import LiveView

T = TypeVar("T")
_numbers = itertools.count(1)


class LoopThread:
    """An event loop running forever in a daemon thread, until `stop()`.

    `run(coro)` is the bridge: it schedules the coroutine on that loop and blocks the
    calling thread until it finishes, returning its value or raising its exception.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop = asyncio.new_event_loop()
        self.thread: threading.Thread = threading.Thread(
            target=self._main, name=f"sitq-sync-loop-{next(_numbers)}", daemon=True
        )
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop thread and wait for its result."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(
                "a SyncTaskQueue method was called from the queue's own event loop (inside an "
                "async task run by its worker): it would wait for itself forever. Inside async "
                "code use an async TaskQueue with `await`."
            )
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C / "interrupt kernel" while waiting: stop the call
            raise

    def stop(self) -> None:
        """Cancel what still runs on the loop, stop it and wait for the thread to end."""
        if not self.thread.is_alive():
            return
        self.run(self._cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()

    async def _cancel_the_rest(self) -> None:
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self.loop.shutdown_asyncgens()
        await self.loop.shutdown_default_executor()


class SyncTaskQueue:
    """`TaskQueue` without `await`: see the module docstring.

    Takes the same arguments as TaskQueue. Use `with SyncTaskQueue(...) as queue:`, or call
    `queue.connect()` and later `queue.close()`; a closed SyncTaskQueue cannot be reused.
    """

    def __init__(
        self,
        backend: Backend | str,
        serializer: Serializer | None = None,
        *,
        clock: Clock | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self._queue = TaskQueue(
            backend, serializer, clock=clock, max_payload_bytes=max_payload_bytes
        )
        self._loop: LoopThread | None = None
        self._closed = False
        self._workers: list[SyncWorker] = []

    def __repr__(self) -> str:
        return f"SyncTaskQueue({self.backend!r}, {self.serializer!r})"

    @property
    def backend(self) -> Backend:
        return self._queue.backend

    @property
    def serializer(self) -> Serializer:
        return self._queue.serializer

    @property
    def clock(self) -> Clock:
        return self._queue.clock

    @property
    def thread(self) -> threading.Thread | None:
        """The thread running the private loop (None before connect)."""
        return None if self._loop is None else self._loop.thread

    # -- lifecycle -------------------------------------------------------------------------

    def connect(self) -> SyncTaskQueue:
        """Start the loop thread and open the backend."""
        if self._closed:
            raise QueueClosedError("this SyncTaskQueue was closed; make a new one")
        if self._loop is None:
            self._loop = LoopThread()
            try:
                self._loop.run(self._queue.connect())
            except BaseException:
                self._loop.stop()
                self._loop, self._closed = None, True
                raise
        return self

    def close(self) -> None:
        """Stop its workers (running tasks may finish), close the backend, end the thread."""
        if self._closed:
            return
        self._closed = True
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            for worker in self._workers:
                loop.run(worker.worker.stop())
            loop.run(self._queue.close())
        finally:
            loop.stop()

    def __enter__(self) -> SyncTaskQueue:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            loop = self._open_loop()
        except QueueClosedError:
            coro.close()  # it will never run; closing avoids a "never awaited" warning
            raise
        return loop.run(coro)

    def _open_loop(self) -> LoopThread:
        """The loop thread; the first call connects by itself (like TaskQueue)."""
        if self._loop is None:
            self.connect()
        assert self._loop is not None
        return self._loop

    # -- the TaskQueue methods, without await ----------------------------------------------

    # Each method does what TaskQueue's method of the same name does (see its docstring).

    @overload
    def enqueue(
        self, func: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskId[R]: ...
    @overload
    def enqueue(self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> TaskId[R]: ...
    def enqueue(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskId[Any]:
        return self._run(self._queue.enqueue(func, *args, **kwargs))

    def enqueue_many(self, calls: Iterable[TaskCall | tuple[Any, ...]]) -> list[str]:
        return self._run(self._queue.enqueue_many(list(calls)))

    def chain(self, *calls: TaskCall | tuple[Any, ...]) -> list[str]:
        return self._run(self._queue.chain(*calls))

    def with_options(self, **options: Unpack[OptionValues]) -> SyncOptionsView:
        return SyncOptionsView(self, self._queue.with_options(**options))

    @overload
    def get_result(self, task_id: TaskId[R], timeout: float | None = None) -> Result[R] | None: ...
    @overload
    def get_result(self, task_id: str, timeout: float | None = None) -> Result[Any] | None: ...
    def get_result(self, task_id: str, timeout: float | None = None) -> Result[Any] | None:
        return self._run(self._queue.get_result(task_id, timeout))

    def deserialize_result(self, result: Result[Any]) -> Any:
        """`result.value` (see TaskQueue.deserialize_result: for the original sitq's code)."""
        return self._queue.deserialize_result(result)

    def gather(
        self,
        task_ids: Sequence[str],
        timeout: float | None = None,
        *,
        missing_ok: bool = False,
        progress: bool | None = None,
    ) -> list[Result[Any] | None]:
        """Wait for many tasks; results in the order of `task_ids`, None where unfinished.

        The progress bar is made here, in the calling thread, so Jupyter shows it in the
        cell that asked for it rather than in the cell that started the loop thread.
        """
        loop = self._open_loop()  # open loop, open queue: connect() opens both
        ids = list(task_ids)
        bar = ProgressBar(len(ids), progress)
        try:
            return loop.run(self._queue._wait_for(ids, timeout, missing_ok, bar.update))
        finally:
            bar.close()

    def get_task(self, task_id: str) -> TaskInfo:
        return self._run(self._queue.get_task(task_id))

    def status(self, task_id: str) -> TaskStatus:
        return self._run(self._queue.status(task_id))

    def counts(self) -> dict[TaskStatus, int]:
        return self._run(self._queue.counts())

    def summary(self) -> QueueSummary:
        return self._run(self._queue.summary())

    def history(self, task_id: str | None = None) -> History:
        return self._run(self._queue.history(task_id))

    def schedule(
        self, func: Callable[..., Any], /, **when: Unpack[ScheduleKeywords]
    ) -> ScheduleInfo:
        return self._run(self._queue._schedule_with(NO_OPTIONS, func, **when))

    def unschedule(self, name: str) -> bool:
        return self._run(self._queue.unschedule(name))

    def schedules(self) -> Schedules:
        return self._run(self._queue.schedules())

    def dead_letters(self) -> list[Result[Any]]:
        return self._run(self._queue.dead_letters())

    def requeue(self, task_id: str) -> None:
        self._run(self._queue.requeue(task_id))

    def purge_dead_letters(self) -> int:
        return self._run(self._queue.purge_dead_letters())

    def prune(self, older_than: float, *, batch: int = 500) -> int:
        return self._run(self._queue.prune(older_than, batch=batch))

    def cancel(self, task_id: str) -> bool:
        return self._run(self._queue.cancel(task_id))

    def live(
        self, *, interval: float = 1.0, window: float = 120.0, worker: SyncWorker | None = None
    ) -> LiveView:
        """`TaskQueue.live`: the view refreshes on the notebook's loop and reads the queue
        on this queue's own loop thread; `worker`: a worker from `queue.worker()`."""
        from sitq.views.live import LiveView

        loop = self._open_loop().loop
        breakers = None if worker is None else worker.worker
        return LiveView(self._queue, interval=interval, window=window, worker=breakers,
                        reads_on=loop)  # fmt: skip

    # -- a worker on the same loop ---------------------------------------------------------

    def worker(self, **options: Any) -> SyncWorker:
        """A Worker on this queue's loop and backend object; takes Worker's keywords.

        It uses the queue's serializer and clock unless given others. `close()` stops it.
        """
        self._open_loop()  # fail now, not at start(), if the queue is not open
        options.setdefault("serializer", self.serializer)
        options.setdefault("clock", self.clock)
        worker = SyncWorker(self, Worker(self.backend, **options))
        self._workers.append(worker)
        return worker


class SyncOptionsView:
    """`sync_queue.with_options(...)`: enqueue and enqueue_many with options attached."""

    def __init__(self, queue: SyncTaskQueue, view: OptionsView) -> None:
        self._queue = queue
        self._view = view

    @property
    def options(self) -> TaskOptions:
        return self._view.options

    @overload
    def enqueue(
        self, func: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskId[R]: ...
    @overload
    def enqueue(self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> TaskId[R]: ...
    def enqueue(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskId[Any]:
        return self._queue._run(self._view.enqueue(func, *args, **kwargs))

    def enqueue_many(self, calls: Iterable[TaskCall | tuple[Any, ...]]) -> list[str]:
        return self._queue._run(self._view.enqueue_many(list(calls)))

    def chain(self, *calls: TaskCall | tuple[Any, ...]) -> list[str]:
        return self._queue._run(self._view.chain(*calls))

    def schedule(
        self, func: Callable[..., Any], /, **when: Unpack[ScheduleKeywords]
    ) -> ScheduleInfo:
        return self._queue._run(self._view.schedule(func, **when))


class SyncWorker:
    """A Worker driven from plain code, on its SyncTaskQueue's private loop.

    `start()` returns at once and the worker runs in the background (on the loop thread)
    until `stop()`; `run_once()` and `run_until_idle()` block until their work is done.
    """

    def __init__(self, queue: SyncTaskQueue, worker: Worker) -> None:
        self._queue = queue
        self.worker = worker

    def __repr__(self) -> str:
        return f"Sync{self.worker!r}"

    @property
    def processed(self) -> int:
        return self.worker.processed

    def start(self) -> None:
        self._queue._run(self.worker.start())

    def stop(self, grace: float | None = None) -> None:
        self._queue._run(self.worker.stop(grace))

    def run_once(self) -> int:
        return self._queue._run(self.worker.run_once())

    def run_until_idle(
        self, *, max_tasks: int | None = None, until: float | dt.datetime | None = None
    ) -> int:
        return self._queue._run(self.worker.run_until_idle(max_tasks=max_tasks, until=until))

    def __enter__(self) -> SyncWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""sitq: a small, real, async task queue that teaches itself.

from sitq import TaskQueue, Worker
from sitq.backends.sqlite import SQLiteBackend

backend = SQLiteBackend("queue.db")
async with TaskQueue(backend) as queue, Worker(backend):
    task_id = await queue.enqueue(pow, 2, 10)
    print((await queue.get_result(task_id, timeout=5)).value)   # 1024
"""

import logging

from sitq.backends.base import Backend
from sitq.backends.sqlite import SQLiteBackend
from sitq.clock import Clock, FakeClock, SystemClock
from sitq.engine.calls import call
from sitq.engine.context import TaskContext, current_task, report_progress
from sitq.engine.hooks import TaskEvent, WorkerHooks
from sitq.engine.queue import TaskQueue
from sitq.engine.worker import Worker
from sitq.errors import (
    BackendError,
    EventLoopError,
    IncompleteBackendError,
    InvalidOptionError,
    InvalidScheduleError,
    InvalidTaskError,
    MissingExtraError,
    PayloadTooLargeError,
    QueueClosedError,
    SchemaVersionError,
    SerializationError,
    SignatureError,
    SitqError,
    SitqWarning,
    TaskNotFoundError,
    TaskStateError,
    UniqueKeyTakenError,
)
from sitq.options import TaskOptions, task
from sitq.overview import QueueSummary, ScheduleInfo, Schedules
from sitq.policy.breaker import BreakerState, BreakerTransition, CircuitBreaker
from sitq.policy.retry import (
    NO_RETRY,
    PermanentError,
    Retry,
    RetryPolicy,
    TaskTimeout,
    TransientError,
    WorkerLost,
)
from sitq.sync import SyncTaskQueue, SyncWorker
from sitq.task import TERMINAL, Attempt, History, Result, TaskId, TaskInfo, TaskStatus
from sitq.wire.json_serialization import JsonSerializer
from sitq.wire.serialization import (
    CloudpickleSerializer,
    Serializer,
    TaskImportError,
    TaskNotAllowedError,
)
from sitq.wire.signing import SignedSerializer

__version__ = "0.1.0"

# A library never configures logging for its users: with a NullHandler, sitq's records go
# wherever the application sends them (e.g. logging.basicConfig) and nowhere otherwise.
logging.getLogger("sitq").addHandler(logging.NullHandler())

__all__ = [
    # the client, the worker and what they exchange
    "TaskQueue", "Worker", "Result", "TaskId", "TaskStatus", "TERMINAL", "TaskInfo", "Attempt",
    "call",
    "History", "QueueSummary", "SyncTaskQueue", "SyncWorker", "ScheduleInfo", "Schedules",
    # options and retries
    "task", "TaskOptions", "RetryPolicy", "NO_RETRY", "Retry", "TransientError",
    "PermanentError", "TaskTimeout", "WorkerLost",
    # circuit breaker, hooks, the running task
    "CircuitBreaker", "BreakerState", "BreakerTransition", "WorkerHooks", "TaskEvent",
    "TaskContext", "current_task", "report_progress",
    # storage, serialization, time
    "Backend", "SQLiteBackend", "Serializer", "CloudpickleSerializer", "JsonSerializer",
    "SignedSerializer", "Clock", "SystemClock", "FakeClock",
    # errors
    "SitqError", "SerializationError", "PayloadTooLargeError", "TaskNotFoundError",
    "InvalidTaskError", "InvalidOptionError", "QueueClosedError", "TaskStateError",
    "SchemaVersionError", "BackendError", "SignatureError", "TaskImportError",
    "TaskNotAllowedError", "IncompleteBackendError", "MissingExtraError", "SitqWarning",
    "EventLoopError", "InvalidScheduleError", "UniqueKeyTakenError",
]  # fmt: skip

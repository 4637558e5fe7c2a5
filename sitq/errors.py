"""Typed errors: each names the problem and says how to fix it.

Everything sitq raises on purpose derives from `SitqError`, so callers can catch the whole
family, and each subclass also derives from the matching built-in (ValueError, LookupError...)
so code that already expects those keeps working.
"""

from __future__ import annotations


class SitqError(Exception):
    """Base class for every error sitq raises on purpose."""


class SerializationError(SitqError, TypeError):
    """A task, argument or result cannot be turned into bytes (or back)."""


class PayloadTooLargeError(SitqError, ValueError):
    """A serialized task is bigger than the queue's `max_payload_bytes`."""


class TaskNotFoundError(SitqError, LookupError):
    """No task has this id in this queue's database."""


class InvalidTaskError(SitqError, TypeError):
    """What was enqueued is not something a worker can run."""


class InvalidOptionError(SitqError, ValueError):
    """A task option (delay, eta, timeout, priority...) has an impossible value."""


class QueueClosedError(SitqError, RuntimeError):
    """The queue (or its backend) was used before `connect()` or after `close()`."""


class TaskStateError(SitqError, RuntimeError):
    """The task is not in a state that allows this (e.g. requeue a running task)."""


class SchemaVersionError(SitqError, RuntimeError):
    """The database was written by a newer sitq than this one."""


class BackendError(SitqError, RuntimeError):
    """The storage cannot be opened or written (missing folder, read-only file...)."""


class SignatureError(SitqError, ValueError):
    """A signed payload is unsigned or was changed after signing: it is never unpickled."""


class EventLoopError(SitqError, RuntimeError):
    """A queue, backend or worker was used from an event loop it cannot move to: the loop
    that opened it still runs (in another thread), or an in-memory database died with it."""

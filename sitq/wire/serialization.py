"""How a task call and its result become bytes in the database, and back.

A serializer turns a *call* (function, args, kwargs) and a *value* (a result) into bytes.
`CloudpickleSerializer` (the default) can send lambdas, closures and functions defined in a
notebook, because it pickles code by value. That power has a price: unpickling runs code, so
only read a database you trust, or sign payloads (`SignedSerializer`), or use
`JsonSerializer`, which carries data only and names functions by import path.
"""

from __future__ import annotations

import functools
import pickle
import sys
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import cloudpickle

from sitq.errors import SerializationError
from sitq.options import TaskOptions


class TaskImportError(SerializationError):
    """A payload or result needs a module this process cannot import: the task cannot load."""


class TaskNotAllowedError(SerializationError):
    """A JSON row names a function outside `JsonSerializer(modules=...)`: refused, never run."""


def import_hint(module: str, exc: ImportError, what: str) -> TaskImportError:
    """The error for a row whose module is missing here, with the usual fix."""
    missing = exc.name or module
    return TaskImportError(
        f"cannot load {what}: it needs module {missing!r}, which this process cannot import "
        f"({exc}). Make it importable by the worker (and by clients reading results): start "
        f"the worker from your project folder with `python -m sitq worker DB --import "
        f"{module}`, or put the module's folder on PYTHONPATH."
    )


@dataclass(frozen=True)
class TaskCall:
    """A function, the arguments to call it with, and how to run it: a task row's payload."""

    func: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: TaskOptions | None = None


@runtime_checkable
class Serializer(Protocol):
    """Turns calls and values into bytes and back. Errors are `SerializationError`.

    Every method is told the id of the task the bytes belong to, so a serializer that signs
    can bind the bytes to their place (`SignedSerializer`); the others ignore it.
    """

    def encode_call(self, call: TaskCall, *, task_id: str) -> bytes: ...

    def decode_call(self, data: bytes, *, task_id: str) -> TaskCall: ...

    def encode_value(self, value: Any, *, task_id: str) -> bytes: ...

    def decode_value(self, data: bytes, *, task_id: str) -> Any: ...


PICKLING_HINT = (
    "Task arguments travel through the database as bytes, so they must be data, not live "
    "resources: pass a file *path* instead of an open file, create locks and connections "
    "inside the task, and turn generators into lists."
)


RESULT_HINT = (
    "A task's return value travels back through the database as bytes, so it must be data: "
    "return a list instead of a generator, a path instead of an open file."
)


def _pickle_error(
    what: str, obj: Any, exc: Exception, hint: str = PICKLING_HINT
) -> SerializationError:
    return SerializationError(
        f"cannot serialize {what} of type {type(obj).__name__}: {exc}. {hint}"
    )


def _first_unpicklable(call: TaskCall) -> tuple[str, Any] | None:
    """Find the argument that spoils a call, so the error can name it."""
    parts: list[tuple[str, Any]] = [("the task function", call.func)]
    parts += [(f"argument {i}", arg) for i, arg in enumerate(call.args)]
    parts += [(f"keyword argument {name!r}", arg) for name, arg in call.kwargs.items()]
    for label, obj in parts:
        try:
            cloudpickle.dumps(obj)
        except Exception:
            return label, obj
    return None


#: Values the standard (C) pickler writes exactly as cloudpickle would: plain data.
PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes)
#: How deep `_is_plain` looks into containers before it lets cloudpickle decide.
PLAIN_DEPTH = 4


def _is_plain(value: Any, depth: int = PLAIN_DEPTH) -> bool:
    """True for data made only of PLAIN_TYPES in tuples, lists and dicts."""
    if isinstance(value, PLAIN_TYPES):
        return True
    if depth == 0 or type(value) not in (tuple, list, dict):
        return False
    if not value:  # () and {}: the arguments of most calls
        return True
    items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
    return all(_is_plain(k, depth - 1) and _is_plain(v, depth - 1) for k, v in items)


def _by_reference(func: Any) -> bool:
    """True for a function any process can import by its module and name (remembered for
    hashable functions: a batch calls the same one again and again)."""
    try:
        return _by_reference_remembered(func)
    except TypeError:  # an unhashable callable object
        return _looks_up_to(func)


@functools.lru_cache(maxsize=1024)
def _by_reference_remembered(func: Any) -> bool:
    return _looks_up_to(func)


def _looks_up_to(func: Any) -> bool:
    module = sys.modules.get(getattr(func, "__module__", None) or "__main__")
    name = getattr(func, "__qualname__", "")
    if module is None or module.__name__ == "__main__" or "<" in name:
        return False
    found: Any = module
    for part in name.split("."):
        found = getattr(found, part, None)
    return found is func


class CloudpickleSerializer:
    """The default: anything cloudpickle can send, including lambdas and notebook code.

    The common case, an importable function called with plain data, is written by the
    standard pickler (in C, many times faster): it produces what cloudpickle would, since
    cloudpickle too sends importable functions by reference. Anything else (a notebook
    function, a lambda, an object of your own, options) goes through cloudpickle.
    """

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def encode_call(self, call: TaskCall, *, task_id: str | None = None) -> bytes:
        body = (call.func, call.args, call.kwargs, call.options)
        args, kwargs = call.args, call.kwargs
        plain = (not args or _is_plain(args)) and (not kwargs or _is_plain(kwargs))
        if plain and call.options is None and _by_reference(call.func):
            return pickle.dumps(body, protocol=self.protocol)
        try:
            data: bytes = cloudpickle.dumps(body, protocol=self.protocol)
            return data
        except Exception as exc:
            culprit = _first_unpicklable(call)
            label, obj = culprit if culprit else ("the task call", call)
            raise _pickle_error(label, obj, exc) from exc

    def decode_call(self, data: bytes, *, task_id: str | None = None) -> TaskCall:
        body = self._loads(data, "task payload")
        if not isinstance(body, tuple) or len(body) != 4:
            raise SerializationError("task payload is not a sitq call (corrupted row?)")
        func, args, kwargs, options = body
        return TaskCall(func, tuple(args), dict(kwargs), options)

    def encode_value(self, value: Any, *, task_id: str | None = None) -> bytes:
        if type(value) in PLAIN_TYPES:  # None, a number, a string: what most tasks return
            return pickle.dumps(value, protocol=self.protocol)
        try:
            data: bytes = cloudpickle.dumps(value, protocol=self.protocol)
            return data
        except Exception as exc:
            raise _pickle_error("the task's return value", value, exc, RESULT_HINT) from exc

    def decode_value(self, data: bytes, *, task_id: str | None = None) -> Any:
        return self._loads(data, "result")

    @staticmethod
    def _loads(data: bytes, what: str) -> Any:
        try:
            return pickle.loads(data)
        except ImportError as exc:  # pickled by reference to a module not importable here
            raise import_hint(exc.name or "?", exc, what) from exc
        except Exception as exc:
            raise SerializationError(f"cannot deserialize {what}: {exc!r}") from exc

    def __repr__(self) -> str:
        return "CloudpickleSerializer()"


class DumpsLoads(Protocol):
    """A serializer in the original sitq's shape: only `dumps` and `loads` (the `pickle`
    module, or a class of your own). `as_serializer` adapts it to sitq's `Serializer`."""

    def dumps(self, obj: Any, /) -> bytes | str: ...

    def loads(self, data: Any, /) -> Any: ...


class DumpsLoadsSerializer:
    """sitq's four methods on top of a `DumpsLoads` object.

    A call is stored as the tuple (func, args, kwargs, options), a value as itself. `dumps`
    may return str (json, yaml...): the first byte of what is stored says which it was, so
    `loads` gets back exactly the type `dumps` gave, even in another process.
    """

    TEXT, BYTES = b"s", b"b"

    def __init__(self, inner: DumpsLoads) -> None:
        self.inner = inner

    def encode_call(self, call: TaskCall, *, task_id: str | None = None) -> bytes:
        return self._dumps((call.func, call.args, call.kwargs, call.options), "the task call")

    def decode_call(self, data: bytes, *, task_id: str | None = None) -> TaskCall:
        body = self._loads(data, "task payload")
        if not isinstance(body, tuple | list) or len(body) != 4:
            raise SerializationError("task payload is not a sitq call (corrupted row?)")
        func, args, kwargs, options = body
        return TaskCall(func, tuple(args), dict(kwargs), options)

    def encode_value(self, value: Any, *, task_id: str | None = None) -> bytes:
        return self._dumps(value, "the task's return value")

    def decode_value(self, data: bytes, *, task_id: str | None = None) -> Any:
        return self._loads(data, "result")

    def _dumps(self, obj: Any, what: str) -> bytes:
        try:
            data = self.inner.dumps(obj)
        except Exception as exc:
            raise SerializationError(f"{self.inner!r} cannot serialize {what}: {exc!r}") from exc
        if isinstance(data, str):
            return self.TEXT + data.encode()
        if isinstance(data, bytes | bytearray):
            return self.BYTES + bytes(data)
        raise SerializationError(
            f"{self.inner!r}.dumps returned {type(data).__name__}; it must return bytes or str"
        )

    def _loads(self, data: bytes, what: str) -> Any:
        marker, body = data[:1], data[1:]
        if marker not in (self.TEXT, self.BYTES):
            raise SerializationError(f"cannot deserialize {what}: not written by {self!r}")
        try:
            return self.inner.loads(body.decode() if marker == self.TEXT else body)
        except Exception as exc:
            raise SerializationError(f"cannot deserialize {what}: {exc!r}") from exc

    def __repr__(self) -> str:
        return f"DumpsLoadsSerializer({self.inner!r})"


def as_serializer(serializer: Serializer | DumpsLoads | None) -> Serializer:
    """The serializer to use: the default for None, a sitq `Serializer` as it is, and an
    object with only dumps/loads (the original sitq's protocol) through an adapter."""
    if serializer is None:
        return CloudpickleSerializer()
    if isinstance(serializer, Serializer):
        return serializer
    if callable(getattr(serializer, "dumps", None)) and callable(
        getattr(serializer, "loads", None)
    ):
        return DumpsLoadsSerializer(serializer)
    raise SerializationError(
        f"{serializer!r} is not a serializer: give an object with sitq's encode_call, "
        "decode_call, encode_value and decode_value, or one with dumps and loads"
    )

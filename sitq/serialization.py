"""How a task call and its result become bytes in the database, and back.

A serializer turns a *call* (function, args, kwargs) and a *value* (a result) into bytes.
`CloudpickleSerializer` (the default) can send lambdas, closures and functions defined in a
notebook, because it pickles code by value. That power has a price: unpickling runs code, so
only read a database you trust, or sign payloads (`SignedSerializer`), or use
`JsonSerializer`, which carries data only and names functions by import path.
"""

from __future__ import annotations

import hmac
import importlib
import inspect
import json
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import cloudpickle

from sitq.errors import SerializationError, SignatureError
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


def _pickle_error(what: str, obj: Any, exc: Exception) -> SerializationError:
    return SerializationError(
        f"cannot serialize {what} of type {type(obj).__name__}: {exc}. {PICKLING_HINT}"
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


class CloudpickleSerializer:
    """The default: anything cloudpickle can send, including lambdas and notebook code."""

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def encode_call(self, call: TaskCall, *, task_id: str | None = None) -> bytes:
        try:
            body = (call.func, call.args, call.kwargs, call.options)
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
        try:
            data: bytes = cloudpickle.dumps(value, protocol=self.protocol)
            return data
        except Exception as exc:
            raise _pickle_error("the task's return value", value, exc) from exc

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


def import_path(func: Any) -> str:
    """`module:qualname` for a function a worker can import again by name."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise SerializationError(
            f"JsonSerializer names tasks by import path, and {func!r} has none a worker "
            "could import (lambdas, closures and functions defined in __main__ or a notebook "
            "have none). Move the function into a module, or use CloudpickleSerializer."
        )
    return f"{module}:{qualname}"


def resolve_import_path(path: str) -> Any:
    """Import `module:qualname` and return the object it names (any object: no allow-list)."""
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except ImportError as exc:
        raise import_hint(module_name, exc, f"task {path!r}") from exc
    except AttributeError as exc:
        raise SerializationError(f"cannot import task {path!r}: {exc}") from exc
    return obj


def resolve_defined_function(path: str) -> Any:
    """Return the callable `module:qualname` names, only if it is *defined* in that module.

    Following the qualname with `getattr` alone would reach anything the module imported:
    `myapp.tasks:os.system` is `os.system`. So every step but the last must be a class
    defined in the module, and the object found must say it was defined there under that
    very name (`__module__` and `__qualname__`), which is how `import_path` named it.
    """
    module_name, _, qualname = path.partition(":")
    obj: Any = _import_module(module_name, path)
    steps = qualname.split(".")
    for i, part in enumerate(steps):
        reached = ".".join(steps[: i + 1])
        if not hasattr(obj, part):
            raise SerializationError(f"cannot import task {path!r}: no {reached!r} there")
        obj = getattr(obj, part)
        if inspect.ismodule(obj):
            raise _not_defined(path, f"{reached!r} is a module {module_name} imported")
        if i < len(steps) - 1 and not (isinstance(obj, type) and _defined_in(obj, module_name)):
            raise _not_defined(path, f"{reached!r} is not a class defined in {module_name}")
    if not callable(obj) or not _defined_in(obj, module_name):
        found = getattr(obj, "__module__", None)
        raise _not_defined(path, f"what it names is defined in {found!r}, not {module_name!r}")
    if getattr(obj, "__qualname__", None) != qualname:
        raise _not_defined(path, f"it is an alias of {getattr(obj, '__qualname__', obj)!r}")
    return obj


def _import_module(module_name: str, path: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise import_hint(module_name, exc, f"task {path!r}") from exc


def _defined_in(obj: Any, module_name: str) -> bool:
    return getattr(obj, "__module__", None) == module_name


def _not_defined(path: str, reason: str) -> TaskNotAllowedError:
    return TaskNotAllowedError(
        f"task {path!r} was refused before running: {reason}. With modules=... (the "
        "worker's --import) a JSON row may name only a function *defined* in an allowed "
        "module, as module:qualname. Enqueue the function from the module that defines it, "
        "or allow that module."
    )


class JsonSerializer:
    """Data-only payloads: JSON arguments and results, tasks named by import path.

    Reading a JSON row never runs code. A row still names a function the worker will call
    (and a module it will import), so when the database may be written by someone you do
    not trust, also give `modules=["myapp.tasks"]`: a row naming anything outside these
    modules (and their submodules) is refused before anything is imported. The price:
    arguments and results must be JSON values (dict, list, str, int, float, bool, None),
    and tuples come back as lists.
    """

    def __init__(self, modules: Iterable[str] | None = None) -> None:
        if isinstance(modules, str):  # tuple("myapp") would allow "m", "y", "a"...
            raise TypeError(
                f"modules= takes a list of module names, not one string: write "
                f"JsonSerializer(modules=[{modules!r}])"
            )
        self.modules = None if modules is None else tuple(modules)
        for module in self.modules or ():
            if not isinstance(module, str) or not module:
                raise TypeError(f"modules= holds module names (str), got {module!r}")

    def _check_allowed(self, path: str) -> str:
        module = path.partition(":")[0]
        allowed = self.modules is None or any(
            module == m or module.startswith(m + ".") for m in self.modules
        )
        if not allowed:
            raise TaskNotAllowedError(
                f"task {path!r} is outside the modules this JsonSerializer may run "
                f"({', '.join(self.modules or ())}); it was refused and not imported. If it is "
                "yours, add its module to modules= (a CLI worker: --import it)."
            )
        return path

    def encode_call(self, call: TaskCall, *, task_id: str | None = None) -> bytes:
        body = {
            "func": self._check_allowed(import_path(call.func)),
            "args": call.args,
            "kwargs": call.kwargs,
            "options": _options_as_json(call.options),
        }
        return self._dumps(body, "task arguments")

    def decode_call(self, data: bytes, *, task_id: str | None = None) -> TaskCall:
        body = self._loads(data, "task payload")
        if not isinstance(body, dict) or not {"func", "args", "kwargs"} <= body.keys():
            raise SerializationError("task payload is not a sitq JSON call")
        if not isinstance(body["func"], str):
            raise SerializationError("task payload names no function (corrupted row?)")
        func = self._resolve(self._check_allowed(body["func"]))
        options = TaskOptions(**body["options"]) if body.get("options") else None
        return TaskCall(func, tuple(body["args"]), body["kwargs"], options)

    def _resolve(self, path: str) -> Any:
        """With an allow-list, only functions defined in it; without, any importable name."""
        if self.modules is None:
            return resolve_import_path(path)
        return resolve_defined_function(path)

    def encode_value(self, value: Any, *, task_id: str | None = None) -> bytes:
        return self._dumps(value, "the task's return value")

    def decode_value(self, data: bytes, *, task_id: str | None = None) -> Any:
        return self._loads(data, "result")

    @staticmethod
    def _dumps(obj: Any, what: str) -> bytes:
        try:
            return json.dumps(obj, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"cannot serialize {what} as JSON: {exc}. JsonSerializer carries only JSON "
                "values; use CloudpickleSerializer for other Python objects."
            ) from exc

    @staticmethod
    def _loads(data: bytes, what: str) -> Any:
        try:
            return json.loads(data)
        except ValueError as exc:
            raise SerializationError(f"cannot deserialize {what}: {exc}") from exc

    def __repr__(self) -> str:
        return "JsonSerializer()" if self.modules is None else f"JsonSerializer({self.modules})"


def _options_as_json(options: TaskOptions | None) -> dict[str, Any] | None:
    """The run-time options a JSON row can carry: timeout, executor and name."""
    if options is None:
        return None
    if options.retry is not None:
        raise SerializationError(
            "JsonSerializer cannot carry a per-call retry policy (it may hold code). Attach it "
            "to the function instead, with @sitq.task(retry=...), or use CloudpickleSerializer."
        )
    carried = {"timeout": options.timeout, "executor": options.executor, "name": options.name}
    return {key: value for key, value in carried.items() if value is not None}


class SignedSerializer:
    """Wraps another serializer and HMAC-signs every value with a secret key, bound to its place.

    A row is verified *before* the inner serializer sees it, so a tampered or unsigned
    pickle is refused with `SignatureError` and never unpickled. Share the key between the
    processes that enqueue and the workers, and keep it out of the database.

    The signature covers the task id and the field ("payload" or "result") as well as the
    bytes. Without that, someone who can write the database could copy a signed *result* (data
    a task returned, perhaps echoing user input) into another row's *payload* and have it run
    as a call, or copy one task's result onto another. Bound, a value is valid only where it
    was written; a moved value is refused and never decoded. Rows signed by sitq versions
    that signed the bytes alone are refused too: re-enqueue them.
    """

    DIGEST = "sha256"  # a name, as hmac.new takes it
    TAG_SIZE = 32
    VERSION = b"sitq-signed-v2"  # what is signed changed once: the bytes alone were "v1"

    def __init__(self, key: bytes | str, inner: Serializer | None = None) -> None:
        key_bytes = key.encode() if isinstance(key, str) else bytes(key)
        if len(key_bytes) < 16:
            raise ValueError("a signing key needs at least 16 bytes; use secrets.token_hex(32)")
        self._key = key_bytes
        self.inner: Serializer = inner or CloudpickleSerializer()

    def _tag(self, data: bytes, field: str, task_id: str | None) -> bytes:
        """The HMAC of the bytes *and* their place, so a copy elsewhere does not verify."""
        if not isinstance(task_id, str) or not task_id:
            raise SignatureError(
                f"SignedSerializer binds each {field} to its task, so it needs the task id: "
                f"call it with task_id=... (got {task_id!r})"
            )
        place = task_id.encode()
        header = b"\0".join([self.VERSION, field.encode(), len(place).to_bytes(4, "big")])
        return hmac.new(self._key, header + b"\0" + place + data, self.DIGEST).digest()

    def _sign(self, data: bytes, field: str, task_id: str | None) -> bytes:
        return self._tag(data, field, task_id) + data

    def _verify(self, signed: bytes, field: str, task_id: str | None) -> bytes:
        tag, data = signed[: self.TAG_SIZE], signed[self.TAG_SIZE :]
        expected = self._tag(data, field, task_id)
        if len(signed) < self.TAG_SIZE or not hmac.compare_digest(tag, expected):
            raise SignatureError(
                f"{field} signature does not match for task {task_id}: the row is unsigned, "
                f"was changed, was signed with another key, or is a {field} copied from "
                "another row or field (a signed value is valid only where it was written). "
                "It was not deserialized."
            )
        return data

    def encode_call(self, call: TaskCall, *, task_id: str | None = None) -> bytes:
        data = self.inner.encode_call(call, task_id=task_id or "")
        return self._sign(data, "payload", task_id)

    def decode_call(self, data: bytes, *, task_id: str | None = None) -> TaskCall:
        verified = self._verify(data, "payload", task_id)
        return self.inner.decode_call(verified, task_id=task_id or "")

    def encode_value(self, value: Any, *, task_id: str | None = None) -> bytes:
        data = self.inner.encode_value(value, task_id=task_id or "")
        return self._sign(data, "result", task_id)

    def decode_value(self, data: bytes, *, task_id: str | None = None) -> Any:
        verified = self._verify(data, "result", task_id)
        return self.inner.decode_value(verified, task_id=task_id or "")

    def __repr__(self) -> str:
        return f"SignedSerializer(inner={self.inner!r})"

"""JsonSerializer: data-only payloads, and the allow-list that decides what a row may call.

Reading a JSON row never runs code, but a row still *names* a function to call
(`myapp.tasks:resize`). With `JsonSerializer(modules=["myapp.tasks"])`:

- a module is imported only if it is in the list itself: not a submodule of a listed
  package (importing `myapp.admin_script` would run its import-time code), checked before
  anything is imported;
- a name is resolved only to a *function* (`def` or `async def`) *defined* in that module,
  checked step by step: not a class (calling one builds an object from a row's arguments),
  not a callable object, and not what the module merely imported (`myapp.tasks:os.system`).
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Iterable
from typing import Any

from sitq.errors import SerializationError
from sitq.options import TaskOptions
from sitq.wire.serialization import TaskCall, TaskNotAllowedError, import_hint


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
    if not inspect.isfunction(obj):
        raise _not_defined(path, f"it names a {type(obj).__name__}, not a function")
    if not _defined_in(obj, module_name):
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
        "worker's --import) a JSON row may name only a function (def or async def) *defined* "
        "in an allowed module, as module:qualname. Enqueue the function from the module that "
        "defines it, or allow that module."
    )


class JsonSerializer:
    """Data-only payloads: JSON arguments and results, tasks named by import path.

    Reading a JSON row never runs code. A row still names a function the worker will call
    (and a module it will import), so when the database may be written by someone you do
    not trust, also give `modules=["myapp.tasks"]`: a row naming anything but a function
    defined in one of these very modules (not their submodules) is refused, and nothing
    else is imported. The price:
    arguments and results must be JSON values (dict, list, str, int, float, bool, None),
    and tuples come back as lists.
    """

    def __init__(self, modules: Iterable[str] | None = None) -> None:
        if isinstance(modules, str):  # tuple("myapp") would allow "m", "y", "a"...
            raise TypeError(
                f"modules= takes a list of module names, not one string: write "
                f"JsonSerializer(modules=[{modules!r}])"
            )
        self.modules: tuple[str, ...] | None = None if modules is None else tuple(modules)
        for module in self.modules or ():
            if not isinstance(module, str) or not module:
                raise TypeError(f"modules= holds module names (str), got {module!r}")

    def _check_allowed(self, path: str) -> str:
        module = path.partition(":")[0]
        if self.modules is not None and module not in self.modules:  # a submodule is not in
            raise TaskNotAllowedError(
                f"task {path!r} is outside the modules this JsonSerializer may run "
                f"({', '.join(self.modules)}); it was refused and not imported. If it is "
                "yours, add its module to modules= (a CLI worker: --import it)."
            )
        return path

    def encode_call(self, call: TaskCall, *, task_id: str | None = None) -> bytes:
        path = self._check_allowed(import_path(call.func))
        if self.modules is not None and not inspect.isfunction(call.func):  # say so at once
            raise _not_defined(path, f"it names a {type(call.func).__name__}, not a function")
        body = {
            "func": path,
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

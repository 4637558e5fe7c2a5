"""What the CLI's commands share: opening a database from a URL, the serializer the
options ask for, importing task modules, showing stored text safely, and the usage error
(exit code 2)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from sitq.backends import open_backend
from sitq.backends.base import Backend
from sitq.backends.sqlite import SQLiteBackend
from sitq.errors import InvalidOptionError
from sitq.wire.json_serialization import JsonSerializer
from sitq.wire.serialization import CloudpickleSerializer, Serializer
from sitq.wire.signing import SignedSerializer


class UsageError(Exception):
    """The command line asks for something impossible: exit code 2."""


def shown(text: str, keep: str = "") -> str:
    """Stored text (a task name, an error) made safe for one line of a terminal: control
    characters are escaped as in a repr (a newline as \\n, ESC as \\x1b), so a row cannot
    forge a line of output or send escape sequences to the terminal. `keep`: characters
    to leave alone (a log formatter handles newlines itself)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def open_database(url: str, missing_hint: str | None, read_only: bool = False) -> Backend:
    """The backend a URL or path names. A SQLite file must exist unless `missing_hint` is
    None (`worker --create`): a typo must not start an empty new queue. `read_only`: a
    SQLite file is opened for reading only (PostgreSQL: a role's rights decide)."""
    try:
        backend = open_backend(url)
    except InvalidOptionError as exc:
        raise UsageError(str(exc)) from exc
    if missing_hint is not None and isinstance(backend, SQLiteBackend):
        require_database(backend.path, missing_hint)
    if read_only and isinstance(backend, SQLiteBackend):
        return SQLiteBackend(backend.path, read_only=True)
    return backend


def require_database(path: str, hint: str) -> None:
    """Refuse a path with no database file: a typo must not start an empty new queue."""
    if not path.startswith("file:") and path != ":memory:" and not Path(path).is_file():
        raise UsageError(f"no database at {path!r} (check the path, {hint})")


def serializer_for(args: argparse.Namespace) -> Serializer:
    inner: Serializer = CloudpickleSerializer()
    if args.serializer == "json":  # a worker runs only functions of the modules it imports
        inner = JsonSerializer(getattr(args, "imports", None) or None)
    if args.signing_key_env is None:
        return inner
    key = os.environ.get(args.signing_key_env)
    if not key:
        raise UsageError(
            f"--signing-key-env {args.signing_key_env}: that environment variable is not set "
            "or empty; export the shared key there (never pass it on the command line)"
        )
    try:
        return SignedSerializer(key, inner)
    except ValueError as exc:
        raise UsageError(f"--signing-key-env {args.signing_key_env}: {exc}") from exc


def import_task_module(module: str) -> None:
    """Import a module of task functions, so their import paths resolve in this process."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules next to you are found
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module + ".").startswith(exc.name + "."):
            raise UsageError(
                f"--import {module}: no module named {exc.name!r} (is its folder on "
                "PYTHONPATH, or the current directory?)"
            ) from exc
        raise

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

#: Where every command finds its database when DB is left out.
DATABASE_ENV = "SITQ_DATABASE_URL"


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
    """The backend a URL or path names. The queue must exist unless `missing_hint` is
    None (`--create`): a typo must not start an empty new queue. A SQLite file is checked
    here; a PostgreSQL schema when it connects (`create=False`: QueueNotFoundError, which
    `sitq.cli.main` reports with the hint). `read_only`: a SQLite file is opened for
    reading only (PostgreSQL: a role's rights decide)."""
    try:
        backend = open_backend(url)
    except InvalidOptionError as exc:
        raise UsageError(str(exc)) from exc
    if isinstance(backend, SQLiteBackend):
        if missing_hint is not None:
            require_database(backend.path, missing_hint)
        return SQLiteBackend(backend.path, read_only=True) if read_only else backend
    from sitq.backends.postgres import PostgresBackend  # open_backend imported it already

    assert isinstance(backend, PostgresBackend)
    backend.create = missing_hint is None
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


def import_task_module(module: str, given_as: str | None = None) -> None:
    """Import a module of task functions, so their import paths resolve in this process.
    `given_as`: how the command line named it, for the error (default `--import MODULE`)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules next to you are found
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module + ".").startswith(exc.name + "."):
            given = given_as or f"--import {module}"
            raise UsageError(
                f"{given}: no module named {exc.name!r} (is its folder on PYTHONPATH, or the "
                "current directory?)"
            ) from exc
        raise

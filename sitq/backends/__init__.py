"""Storage backends. `Backend` (in base.py) is the only seam between sitq and a database.

`open_backend(url)` picks one from a URL, so a program, the CLI and a notebook can be
pointed at SQLite or PostgreSQL by a string alone (e.g. from `SITQ_DATABASE_URL`):

| URL                                         | backend                                 |
|---------------------------------------------|-----------------------------------------|
| `tasks.db`, `/var/sitq/tasks.db`            | SQLiteBackend on that file (plain path) |
| `sqlite:///tasks.db`                        | SQLiteBackend, path relative to here    |
| `sqlite+aiosqlite:///tasks.db`              | the same (the original sitq's form)     |
| `sqlite:////var/sitq/tasks.db`              | SQLiteBackend, absolute path            |
| `sqlite:///:memory:`                        | SQLiteBackend in memory                 |
| `postgresql://user@host:5432/db`            | PostgresBackend, tables in schema sitq  |
| `postgresql://user@host/db?schema=team_a`   | PostgresBackend, tables in schema team_a|
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sitq.backends.base import Backend, ClaimedTask, NewTask, Settlement
from sitq.backends.urls import SQLITE_SCHEMES, redacted, require_encoded_password, sqlite_path
from sitq.errors import DISTRIBUTION, IncompleteBackendError, InvalidOptionError

__all__ = [
    "Backend", "ClaimedTask", "NewTask", "Settlement", "as_backend", "open_backend", "sqlite_path",
]  # fmt: skip

SUPPORTED = "sqlite:///PATH, a plain file path, postgresql://... or postgres://..."


def open_backend(url: str | os.PathLike[str]) -> Backend:
    """The backend a URL (or a plain SQLite file path) names; not yet connected."""
    text = os.fspath(url)
    if not isinstance(text, str) or not text:
        raise InvalidOptionError(f"a database URL or path is needed, got {url!r}")
    scheme, found, _ = text.partition("://")
    if not found:  # a plain path (or SQLite's own file: URI)
        return _sqlite(text)
    scheme = scheme.lower()
    if scheme in SQLITE_SCHEMES:
        return _sqlite(sqlite_path(text))
    if scheme in ("postgresql", "postgres"):
        return _postgres(text)
    raise InvalidOptionError(
        f"unsupported database URL scheme {scheme!r} in {redacted(text)!r}: sitq supports "
        f"{SUPPORTED}"
    )


def as_backend(backend: Backend | str | os.PathLike[str]) -> Backend:
    """A backend object as it is; a URL or path opened with `open_backend`. So
    `TaskQueue("sqlite:///tasks.db")` and `Worker(os.environ["SITQ_DATABASE_URL"])` work.
    An object missing operations of `Backend` is refused here, before it can lose a task."""
    if isinstance(backend, str | os.PathLike):
        return open_backend(backend)
    missing = missing_operations(backend)
    if missing:
        raise IncompleteBackendError(
            f"{type(backend).__name__} does not implement {', '.join(missing)} of "
            "sitq.backends.Backend. sitq's backends store whole operations (add_tasks, "
            "claim, settle...), not the original sitq's enqueue/reserve/mark_success: "
            "see docs/migrating.md, or use SQLiteBackend or PostgresBackend"
        )
    return backend


def missing_operations(backend: object) -> list[str]:
    """Names of Backend's members `backend` lacks. A subclass of Backend (the original
    sitq's way to write one) inherits every method as an empty stub that returns None, so
    for it an operation counts as missing while it is still Backend's own stub."""
    members = [name for name in vars(Backend) if not name.startswith("_")]
    if Backend in type(backend).__mro__:  # (issubclass refuses a protocol with attributes)
        return [name for name in members if getattr(type(backend), name) is vars(Backend)[name]]
    expected = [*members, *Backend.__annotations__]
    return [name for name in dict.fromkeys(expected) if not hasattr(backend, name)]


def _sqlite(path: str) -> Backend:
    from sitq.backends.sqlite import SQLiteBackend

    return SQLiteBackend(path)


def _postgres(url: str) -> Backend:
    """A `schema=` query parameter is sitq's, not the server's: it names sitq's schema."""
    try:
        from sitq.backends.postgres import PostgresBackend
    except ImportError as exc:  # asyncpg is an optional extra
        raise InvalidOptionError(
            f"PostgreSQL needs asyncpg: pip install '{DISTRIBUTION}[postgres]' ({exc})"
        ) from exc
    require_encoded_password(url)  # else urlsplit may take a piece of it for the query
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    dsn = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "schema"])))
    if len(schemas) > 1:
        raise InvalidOptionError(f"{redacted(url)!r} names schema= more than once")
    return PostgresBackend(dsn, schema=schemas[0]) if schemas else PostgresBackend(dsn)

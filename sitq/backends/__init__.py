"""Storage backends. `Backend` (in base.py) is the only seam between sitq and a database.

`open_backend(url)` picks one from a URL, so a program, the CLI and a notebook can be
pointed at SQLite or PostgreSQL by a string alone (e.g. from `SITQ_DATABASE_URL`):

| URL                                         | backend                                 |
|---------------------------------------------|-----------------------------------------|
| `tasks.db`, `/var/sitq/tasks.db`            | SQLiteBackend on that file (plain path) |
| `sqlite:///tasks.db`                        | SQLiteBackend, path relative to here    |
| `sqlite:////var/sitq/tasks.db`              | SQLiteBackend, absolute path            |
| `sqlite:///:memory:`                        | SQLiteBackend in memory                 |
| `postgresql://user@host:5432/db`            | PostgresBackend, tables in schema sitq  |
| `postgresql://user@host/db?schema=team_a`   | PostgresBackend, tables in schema team_a|
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sitq.backends.base import Backend, ClaimedTask, NewTask, Settlement
from sitq.backends.urls import redacted, require_encoded_password
from sitq.errors import InvalidOptionError

__all__ = ["Backend", "ClaimedTask", "NewTask", "Settlement", "as_backend", "open_backend"]

SUPPORTED = "sqlite:///PATH, a plain file path, postgresql://... or postgres://..."


def open_backend(url: str | os.PathLike[str]) -> Backend:
    """The backend a URL (or a plain SQLite file path) names; not yet connected."""
    text = os.fspath(url)
    if not isinstance(text, str) or not text:
        raise InvalidOptionError(f"a database URL or path is needed, got {url!r}")
    scheme, found, rest = text.partition("://")
    if not found:  # a plain path (or SQLite's own file: URI)
        return _sqlite(text)
    scheme = scheme.lower()
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise InvalidOptionError(
                f"{redacted(text)!r}: write sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db (three slashes, then the path)"
            )
        return _sqlite(rest[1:])
    if scheme in ("postgresql", "postgres"):
        return _postgres(text)
    raise InvalidOptionError(
        f"unsupported database URL scheme {scheme!r} in {redacted(text)!r}: sitq supports "
        f"{SUPPORTED}"
    )


def as_backend(backend: Backend | str | os.PathLike[str]) -> Backend:
    """A backend object as it is; a URL or path opened with `open_backend`. So
    `TaskQueue("sqlite:///tasks.db")` and `Worker(os.environ["SITQ_DATABASE_URL"])` work."""
    if isinstance(backend, str | os.PathLike):
        return open_backend(backend)
    return backend


def _sqlite(path: str) -> Backend:
    from sitq.backends.sqlite import SQLiteBackend

    return SQLiteBackend(path)


def _postgres(url: str) -> Backend:
    """A `schema=` query parameter is sitq's, not the server's: it names sitq's schema."""
    try:
        from sitq.backends.postgres import PostgresBackend
    except ImportError as exc:  # asyncpg is an optional extra
        raise InvalidOptionError(
            f"PostgreSQL needs asyncpg: pip install 'sitq[postgres]' ({exc})"
        ) from exc
    require_encoded_password(url)  # else urlsplit may take a piece of it for the query
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    dsn = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "schema"])))
    if len(schemas) > 1:
        raise InvalidOptionError(f"{redacted(url)!r} names schema= more than once")
    return PostgresBackend(dsn, schema=schemas[0]) if schemas else PostgresBackend(dsn)

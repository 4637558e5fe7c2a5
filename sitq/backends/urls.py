"""SQLite's URL forms, shared by `open_backend` and `SQLiteBackend` (which imports this
module rather than sitq.backends, to keep the import graph free of cycles)."""

from __future__ import annotations

from sitq.errors import InvalidOptionError

#: URL schemes naming a SQLite file; sqlite+aiosqlite is the original sitq's (SQLAlchemy's).
SQLITE_SCHEMES = ("sqlite", "sqlite+aiosqlite")


def sqlite_path(text: str) -> str:
    """The file a sqlite:/// (or sqlite+aiosqlite:///) URL names; anything else as it is."""
    if not isinstance(text, str):  # bytes from os.fspath: SQLiteBackend refuses them
        return text
    scheme, found, rest = text.partition("://")
    if not found or scheme.lower() not in SQLITE_SCHEMES:
        return text
    if not rest.startswith("/") or rest == "/":
        raise InvalidOptionError(
            f"{text!r}: write {scheme}:///relative/path.db or {scheme}:////absolute/path.db "
            "(three slashes, then the path)"
        )
    return rest[1:]

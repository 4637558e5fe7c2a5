"""Creating, checking and upgrading a SQLite queue file: everything `connect` does once.

Kept apart from the backend's operations because it is a different job: it runs once per
connection, must survive five processes creating the same new file at the same instant,
and must refuse, with a clear message, a file it cannot safely use.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote, unquote

from sitq.backends.sqlite import counting, sql
from sitq.backends.sqlite.errors import storage_error
from sitq.errors import BackendError, SchemaVersionError

logger: logging.Logger = logging.getLogger("sitq.backends.sqlite")
#: First pause between tries when another process holds the lock during set-up.
RETRY_FIRST_PAUSE = 0.005


def file_path(path: str) -> Path | None:
    """The file behind a plain path or a `file:` URI; None for an in-memory database."""
    if path == ":memory:" or "mode=memory" in path:
        return None
    if path.startswith("file:"):
        location = unquote(path[len("file:") :].split("?", 1)[0])
        if location.startswith("//"):  # file://localhost/x or file:///x
            location = location[2:]
            location = location[location.index("/") :] if "/" in location else location
        return Path(location) if location and location != ":memory:" else None
    return Path(path)


def prepare_file(path: str, is_memory: bool, read_only: bool = False) -> str:
    """Check the folder exists; create a new file readable by its owner only (0600);
    warn when an existing file can be read by others (it holds code and data). Returns
    what to open: `path`, or with `read_only` a URI that opens it for reading only."""
    location = None if is_memory else file_path(path)
    if location is None:
        return path
    if not location.parent.is_dir():
        raise BackendError(
            f"the folder {str(location.parent)!r} for database {path!r} does not exist; "
            "create it first or choose another path"
        )
    if read_only:
        if not location.is_file():
            raise BackendError(f"no database file at {path!r} to read: check the path")
        return read_only_uri(path)
    if not location.exists():
        with suppress(FileExistsError):  # another process created it a moment ago
            os.close(os.open(location, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return path
    mode = location.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        logger.warning(
            "database %s can be read or written by other users (mode %o): whoever can "
            "write it can run code in your workers. Run `chmod 600 %s`.",
            location,
            stat.S_IMODE(mode),
            location,
        )
    return path


def read_only_uri(path: str) -> str:
    """A `file:` URI that opens `path` for reading only (`mode=ro`): a copy in a read-only
    folder, a file its reader may not write. SQLite reads a WAL database through its `-shm`
    file, which it cannot make in a read-only folder: when there is none and no `-wal`
    either (nothing uncommitted to replay, and no writer could be at work there), the file
    is opened `immutable=1` as well, which needs neither."""
    if path.startswith("file:"):
        return path + ("&" if "?" in path else "?") + "mode=ro"
    location = os.path.abspath(path)
    folder_writable = os.access(os.path.dirname(location), os.W_OK)
    no_wal = not os.path.exists(location + "-wal") and not os.path.exists(location + "-shm")
    immutable = "&immutable=1" if no_wal and not folder_writable else ""
    return f"file:{quote(location)}?mode=ro{immutable}"


def set_up(
    conn: sqlite3.Connection,
    path: str,
    is_memory: bool,
    synchronous: str,
    busy_timeout: float,
    read_only: bool = False,
) -> None:
    """Runs in the connection's thread: PRAGMAs, schema, version check, upgrade (read-only:
    the version check alone; an older schema is read as it is, and never upgraded).

    Two processes creating one new file at once can meet "database is locked" where SQLite
    does not wait by itself (switching to WAL): such a clash is retried until busy_timeout.
    """
    deadline = time.monotonic() + busy_timeout
    pause = RETRY_FIRST_PAUSE
    while True:
        try:
            if read_only:
                conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
                _check_version(conn, path)
            else:
                _set_up_once(conn, path, is_memory, synchronous, busy_timeout)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise storage_error(exc, path, busy_timeout) or _open_error(path, exc) from exc
        except sqlite3.DatabaseError as exc:
            raise storage_error(exc, path, busy_timeout) or BackendError(
                f"{path!r} is not a usable SQLite database: {exc}"
            ) from exc
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _set_up_once(
    conn: sqlite3.Connection, path: str, is_memory: bool, synchronous: str, busy_timeout: float
) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    if not is_memory:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    began = time.monotonic()
    conn.execute("BEGIN IMMEDIATE")
    waited = time.monotonic() - began  # a new worker that waited out an outage makes up
    try:  # for it as any write does (`sqlite_lock.make_up_for_outage`)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS sitq_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        _check_version(conn, path)
        _create_or_upgrade(conn)
        if waited >= sql.OUTAGE_AT_LEAST:
            conn.execute(sql.MAKE_UP_FOR_OUTAGE, (waited,))
        # An upsert is also a write check: SQLite opens a read-only file without complaint
        # and only objects at the first write. Better to find out here than at enqueue.
        conn.execute(
            "INSERT INTO sitq_meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(sql.SCHEMA_VERSION),),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _check_version(conn: sqlite3.Connection, path: str) -> None:
    found = _stored_version(conn, path)
    if found is not None and found > sql.SCHEMA_VERSION:
        raise SchemaVersionError(
            f"database {path!r} has schema version {found}, but this sitq knows "
            f"version {sql.SCHEMA_VERSION} at most: upgrade sitq to use it"
        )


def _stored_version(conn: sqlite3.Connection, path: str) -> int | None:
    row = conn.execute("SELECT value FROM sitq_meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return None
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise SchemaVersionError(
            f"database {path!r} has schema version {row[0]!r}, which is not a number: it "
            "was not written by sitq, or it was damaged. Use another file, or restore it."
        ) from None


def _create_or_upgrade(conn: sqlite3.Connection) -> None:
    """Create missing tables, add columns newer than the file, then create the indexes
    (rebuilding any an older sitq defined differently)."""
    statements = [_without_comment_lines(s) for s in sql.SCHEMA.split(";") if s.strip()]
    tables = [s for s in statements if s.startswith("CREATE TABLE")]
    indexes = [s for s in statements if not s.startswith("CREATE TABLE")]
    for statement in tables:
        conn.execute(statement)
    have = {row[1] for row in conn.execute("PRAGMA table_info(sitq_tasks)")}
    for column, kind in sql.NEW_COLUMNS.items():
        if column not in have:
            conn.execute(f"ALTER TABLE sitq_tasks ADD COLUMN {column} {kind}")
    for statement in indexes:
        _drop_if_changed(conn, statement)
        conn.execute(statement)
    counting.keep(conn)


def _drop_if_changed(conn: sqlite3.Connection, create_index: str) -> None:
    """Drop an index whose stored definition differs from `create_index` (a file made by
    an older sitq), so that it is built again as this sitq's queries expect it."""
    words = create_index.split()  # CREATE [UNIQUE] INDEX IF NOT EXISTS <name> ON ...
    name = words[words.index("EXISTS") + 1]
    row = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
    ).fetchone()
    wanted = " ".join(create_index.replace(" IF NOT EXISTS", "").split())
    if row is not None and " ".join(row[0].split()) != wanted:
        conn.execute(f"DROP INDEX {name}")


def _without_comment_lines(statement: str) -> str:
    """The statement without its whole-line `--` comments (the schema explains itself)."""
    lines = [line for line in statement.splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(lines).strip()


def _open_error(path: str, exc: sqlite3.OperationalError) -> BackendError:
    text = str(exc)
    location = file_path(path)
    folder_read_only = location is not None and not os.access(location.parent, os.W_OK)
    if "readonly" in text or "read-only" in text or folder_read_only:
        return BackendError(
            f"database {path!r} is read-only (or its folder is: SQLite writes -wal and -shm "
            "files beside it), and a queue must write to it. Fix the file's permissions (and its "
            "folder's) or copy it somewhere writable; `sitq status`, `dead` and `plot` read "
            "it as it is."
        )
    return BackendError(f"cannot set up database {path!r}: {exc}")

"""The command line: `sitq COMMAND [DB] ...`; this module runs one command (`main`).

Made for shells and scripts: results go to stdout, messages and logs to stderr, and the exit
code says what happened: 0 done, 1 a runtime error (no such task, a task in the wrong
state, database unusable...), 2 a usage error (bad arguments, no database there, an
unsupported database URL, a module that does not exist, a function or JSON argument
`enqueue` refuses), 3 the database file is damaged (a worker stops; restarting it will not
help). `sitq` and `python -m sitq` are the same program. Commands that only look (status,
schedules, show, dead, plot) open the database read-only: they work on a read-only copy, and never
wait for the write lock. Every command takes DB from `SITQ_DATABASE_URL` when it is left
out. Only `--create` (worker, enqueue) makes a new queue: elsewhere a SQLite path with no
file, or a PostgreSQL schema with no queue (a typo'd `?schema=`), is a usage error.

    sitq worker queue.db --create --import myapp.tasks --concurrency 8
    sitq enqueue queue.db myapp.tasks:add 1 2  (JSON arguments; --kwargs, --delay, --json)
    sitq status queue.db [--json] [--watch 2]  (redraw every 2 s until Ctrl-C)
    sitq schedules queue.db [--json]   (periodic tasks and their next tick)
    sitq show queue.db 3f1c...         (status, attempts, times, error, traceback; --json)
    sitq cancel queue.db 3f1c...       (a waiting task now; a running one at its heartbeat)
    sitq dead queue.db [--json]
    sitq requeue queue.db 3f1c...      (or --all: every dead letter)
    sitq purge queue.db                (delete the dead letters)
    sitq prune queue.db --older-than 1h (delete finished tasks; workers do it after 7 days)
    sitq plot queue.db --out dashboard.png
    sitq lessons [DIR]                 (copy the lessons to open in JupyterLab)

A worker stops gracefully on SIGTERM or SIGINT (Ctrl-C): it stops claiming, lets running
tasks finish for up to `--grace` seconds, then hands the rest back to the queue without
using an attempt. A second signal exits at once (exit code 128 + signal number, 130 for
Ctrl-C): tasks still running are abandoned and run again once their lease expires.

Where things are: `parser` (the arguments and examples of every command), `commands` (the
commands on a queue), `enqueue` (import paths and JSON arguments), `tasks` (how tasks are
shown), `worker`, `lessons`, and `common` (opening a database, serializers, safe text).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from sitq.backends.urls import redacted, scrubbed
from sitq.cli.commands import missing_hint
from sitq.cli.common import UsageError, shown
from sitq.cli.enqueue import place_words
from sitq.cli.parser import Command, build_parser, choose_database
from sitq.clock import Clock, SystemClock
from sitq.errors import DatabaseCorruptError, QueueNotFoundError, SitqError

__all__ = ["build_parser", "main"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTINUATION = "    "  # starts every further line of a log record that spans lines


class IndentedFormatter(logging.Formatter):
    """One log record per block: its further lines (a multi-line error message, a
    traceback) are indented, so a reader or `grep -A` never mistakes them for records,
    and other control characters are escaped (`shown`)."""

    def format(self, record: logging.LogRecord) -> str:
        text = shown(super().format(record), keep="\n")  # a task's name or error may be hostile
        return text.replace("\n", "\n" + CONTINUATION)


def _log_to_stderr(level: str) -> None:
    """A worker's log is its report: timestamped records on stderr, one block each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(IndentedFormatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


def _message(exc: Exception, db: str) -> str:
    """An error's text for the terminal: URLs in it are shown redacted already, but the
    password is scrubbed again to be sure, and stored text in it has its controls escaped."""
    return shown(scrubbed(str(exc), db), keep="\n")


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 runtime error, 2 usage error,
    3 damaged database). `clock`: the time `status --watch` shows and waits on (a
    `FakeClock` in tests; default the system's)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # exits 2 with a usage message on bad ones
    if args.command == "enqueue":  # its words may sit on both sides of an option
        place_words(args, extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if hasattr(args, "db"):
        choose_database(args, os.environ)
    args.clock = clock or SystemClock()
    if args.command == "worker":  # a long-running process: its log is its report
        _log_to_stderr(args.log_level)
    handler: Command = args.handler
    try:
        return asyncio.run(handler(args))
    except UsageError as exc:
        print(f"sitq: {_message(exc, args.db)}", file=sys.stderr)
        return 2
    except QueueNotFoundError as exc:  # a PostgreSQL schema or database that is not there
        print(f"sitq: {_message(_missing_queue(exc, args), args.db)}", file=sys.stderr)
        return 2
    except SitqError as exc:
        print(f"sitq: {type(exc).__name__}: {_message(exc, args.db)}", file=sys.stderr)
        return 3 if isinstance(exc, DatabaseCorruptError) else 1
    except KeyboardInterrupt:  # Ctrl-C during a short command: no traceback
        if getattr(args, "watch", None) is not None:
            return 0  # how `status --watch` ends
        print("sitq: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


def _missing_queue(exc: QueueNotFoundError, args: argparse.Namespace) -> Exception:
    """The CLI's words for a missing schema: its own fix (--create), not Python's."""
    if exc.schema is None:  # no such database: the error says how to make one
        return exc
    return UsageError(
        f"no sitq queue in schema {exc.schema!r} of {redacted(args.db)}: check the URL's "
        f"?schema= ('sitq' if none), {missing_hint(args)}"
    )

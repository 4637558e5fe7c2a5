"""The command line: `sitq worker | status | schedules | dead | requeue | purge | prune | plot |
lessons`.

Made for shells and scripts: results go to stdout, messages and logs to stderr, and the exit
code says what happened: 0 done, 1 a runtime error (no such task, database unusable...),
2 a usage error (bad arguments, a database file that does not exist, an unsupported
database URL, a module that does not exist), 3 the database file is damaged (a worker
stops; restarting it will not help). `sitq` and `python -m sitq` are the same program.
Commands that only look (status, schedules, dead, plot) open the database read-only: they work on a
read-only copy, and never wait for the write lock.

    sitq worker queue.db --create --import myapp.tasks --concurrency 8
    sitq status queue.db [--json]
    sitq schedules queue.db [--json]   (periodic tasks and their next tick)
    sitq dead queue.db
    sitq requeue queue.db 3f1c...      (or --all: every dead letter)
    sitq purge queue.db                (delete the dead letters)
    sitq prune queue.db --older-than 1h (delete finished tasks; workers do it after 7 days)
    sitq plot queue.db --out dashboard.png
    sitq lessons [DIR]                 (copy the lessons to open in JupyterLab)

A worker stops gracefully on SIGTERM or SIGINT (Ctrl-C): it stops claiming, lets running
tasks finish for up to `--grace` seconds, then hands the rest back to the queue without
using an attempt. A second signal exits at once (exit code 128 + signal number, 130 for
Ctrl-C): tasks still running are abandoned and run again once their lease expires.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from contextlib import suppress
from typing import Any

from sitq import __version__
from sitq.backends.urls import scrubbed
from sitq.cli.common import UsageError, open_database, serializer_for, shown
from sitq.cli.lessons import add_command as add_lessons_command
from sitq.cli.worker import run_worker
from sitq.engine.queue import TaskQueue
from sitq.errors import DatabaseCorruptError, MissingExtraError, SitqError, TaskStateError
from sitq.task import ScheduleInfo, TaskStatus

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]  # returns the exit code
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DB_HELP = "a SQLite file (queue.db, sqlite:///queue.db) or a postgresql:// URL"
CONTINUATION = "    "  # starts every further line of a log record that spans lines


# -- the commands ---------------------------------------------------------------------------


async def show_status(args: argparse.Namespace) -> int:
    """Print how many tasks are in each state, then the total (or the counts as JSON),
    then the periodic tasks, if any, with their next tick (`sitq schedules` says more)."""
    async with _open_queue(args, read_only=True) as queue:
        counts = await queue.counts()
        schedules = [] if args.json else await queue.schedules()
    if args.json:  # for scripts: {"queued": 0, "running": 1, ...}, every state listed
        print(json.dumps({str(status): n for status, n in counts.items()}))
        return 0
    width = max(len(str(status)) for status in TaskStatus)
    for status, n in counts.items():
        print(f"{status!s:<{width}} {n:>8}")
    print(f"{'total':<{width}} {sum(counts.values()):>8}")
    if schedules:
        print(f"\n{_plural(len(schedules), 'schedule')}:")
        for info in schedules:
            print(f"  {shown(info.name)}: {shown(info.when)}, next tick {_utc(info.next_at)}")
    return 0


async def show_schedules(args: argparse.Namespace) -> int:
    """One tab-separated line per periodic task: name, task, when it ticks, missed-tick
    policy, next tick, last tick (UTC, ISO 8601), last error (or all of it as JSON)."""
    async with _open_queue(args, read_only=True) as queue:
        schedules = await queue.schedules()
    if args.json:
        print(json.dumps([_schedule_json(info) for info in schedules]))
        return 0
    for info in schedules:
        error = (info.last_error or "").splitlines()[0] if info.last_error else ""
        fields = [info.name, info.task_name, info.when, f"missed={info.missed}",
                  _utc(info.next_at), _utc(info.last_tick_at), error]  # fmt: skip
        print("\t".join(shown(field) for field in fields))
    if not schedules:
        print("no schedules", file=sys.stderr)
    return 0


def _schedule_json(info: ScheduleInfo) -> dict[str, Any]:
    return {
        "name": info.name, "task": info.task_name, "every": info.every, "cron": info.cron,
        "tz": info.tz, "missed": info.missed, "next_tick": _utc(info.next_at),
        "last_tick": _utc(info.last_tick_at) or None, "last_task_id": info.last_task_id,
        "last_error": info.last_error,
    }  # fmt: skip


def _utc(timestamp: float | None) -> str:
    """A tick as ISO 8601 in UTC, "2026-01-01T09:00:00Z"; "" for none."""
    if timestamp is None:
        return ""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


async def show_dead(args: argparse.Namespace) -> int:
    """One tab-separated line per dead letter: id, name, attempts, error type: message."""
    async with _open_queue(args, read_only=True) as queue:
        dead = await queue.dead_letters()
    for result in dead:
        error = f"{result.error_type}: {result.error}" if result.error_type else result.error
        first_line = (error or "").splitlines()[0] if error else ""
        tries = _attempts(result.attempts, result.max_attempts)
        print(f"{shown(result.task_id)}\t{shown(result.task_name)}\t{tries}\t{shown(first_line)}")
    if not dead:
        print("no dead letters", file=sys.stderr)
    return 0


async def requeue(args: argparse.Namespace) -> int:
    """Give a failed or cancelled task a fresh run; unknown ids are an error (exit 1).

    With --all, every dead letter gets one. A dead letter that someone else requeues in
    the meantime is skipped, not an error: it is running again either way.
    """
    async with _open_queue(args) as queue:
        if not args.all:
            await queue.requeue(args.task_id)
            print(f"requeued {args.task_id}")
            return 0
        requeued = 0
        for dead in await queue.dead_letters():
            with suppress(TaskStateError):
                await queue.requeue(dead.task_id)
                requeued += 1
    print(f"requeued {_dead_letters(requeued)}")
    return 0


async def purge(args: argparse.Namespace) -> int:
    """Delete every dead letter (their attempt history stays)."""
    async with _open_queue(args) as queue:
        purged = await queue.purge_dead_letters()
    print(f"purged {_dead_letters(purged)}")
    return 0


async def plot(args: argparse.Namespace) -> int:
    """Save `sitq.plots.dashboard` of the whole attempt history as an image."""
    try:
        import matplotlib
    except ImportError as exc:  # the core install has no plotting stack
        raise MissingExtraError.needs("plots", "sitq plot", exc) from exc
    matplotlib.use("Agg")  # a file, never a window: works on servers and in CI
    import matplotlib.pyplot as plt

    from sitq.plots import dashboard

    async with _open_queue(args, read_only=True) as queue:
        history = await queue.history()
    figure = dashboard(history)
    try:
        figure.savefig(args.out, dpi=args.dpi)
    except (OSError, ValueError) as exc:
        raise SitqError(f"cannot write {args.out!r}: {exc}") from exc
    finally:
        plt.close(figure)
    print(f"wrote {args.out} ({len(history)} attempts)")
    return 0


# -- helpers --------------------------------------------------------------------------------


def _open_queue(args: argparse.Namespace, read_only: bool = False) -> TaskQueue:
    """A queue on an existing database: inspecting a typo'd path must not create a file."""
    backend = open_database(args.db, "or make one with `sitq worker DB --create`", read_only)
    return TaskQueue(backend, serializer_for(args))


def _attempts(attempts: int, budget: int | None) -> str:
    """ "2 of 5": the attempts a task used, out of its retry budget (stored as data)."""
    return str(attempts) if budget is None else f"{attempts} of {budget}"


async def prune(args: argparse.Namespace) -> int:
    """Delete succeeded and cancelled tasks older than --older-than (dead letters stay)."""
    async with _open_queue(args) as queue:
        pruned = await queue.prune(args.older_than)
    print(f"pruned {pruned} finished task{'' if pruned == 1 else 's'}")
    return 0


#: Units for --older-than: 90s, 15m, 1h, 7d (a plain number is seconds).
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    number, unit = (text[:-1], text[-1]) if text[-1:] in UNITS else (text, "s")
    try:
        value = float(number) * UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use e.g. 90s, 15m, 1h or 7d"
        ) from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a duration >= 0, got {text}")
    return value


def _dead_letters(n: int) -> str:
    return f"{n} dead letter" if n == 1 else f"{n} dead letters"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `sitq` program; every option's help ends with its default."""
    parser = argparse.ArgumentParser(prog="sitq", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"sitq {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Command, text: str) -> Any:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("db", metavar="DB", help=DB_HELP)
        sub.add_argument(
            "--serializer",
            choices=("pickle", "json"),
            default="pickle",
            help="how task calls and results are stored (default: %(default)s)",
        )
        sub.add_argument(
            "--signing-key-env",
            metavar="VAR",
            help="verify/sign payloads with the key in environment variable VAR "
            "(default: no signing)",
        )
        sub.set_defaults(handler=handler)
        return sub

    worker = command("worker", run_worker, "run tasks until SIGTERM/SIGINT")
    worker.add_argument(
        "--create",
        action="store_true",
        help="make a new database if DB does not exist (default: refuse, it may be a typo)",
    )
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        default=10,
        metavar="N",
        help="tasks run at once (default: %(default)s)",
    )
    worker.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module of tasks first (repeatable; default: none)",
    )
    worker.add_argument(
        "--lease",
        type=_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long a claim lasts without a heartbeat, renewed every third of it "
        "(default: %(default)g)",
    )
    worker.add_argument(
        "--grace",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, wait this long for running tasks before handing them back; "
        "a second signal exits at once (default: %(default)g)",
    )
    worker.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
        help="the least important log records shown, on stderr (default: %(default)s)",
    )
    status = command("status", show_status, "count tasks in each state")
    status.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    periodic = command("schedules", show_schedules, "list periodic tasks with their next tick")
    periodic.add_argument("--json", action="store_true", help="print them as a JSON list")
    command("dead", show_dead, "list dead letters: id, name, attempts, error")
    requeuer = command("requeue", requeue, "give a failed or cancelled task a fresh run")
    which = requeuer.add_mutually_exclusive_group(required=True)
    which.add_argument("task_id", nargs="?", metavar="ID", help="the task to run again")
    which.add_argument("--all", action="store_true", help="requeue every dead letter")
    command("purge", purge, "delete every dead letter (their attempt history stays)")
    pruner = command("prune", prune, "delete succeeded/cancelled tasks finished long ago")
    pruner.add_argument(
        "--older-than", type=_duration, required=True, metavar="AGE",
        help="how long ago they finished: 90s, 15m, 1h, 7d",
    )  # fmt: skip
    add_lessons_command(commands)
    plotter = command("plot", plot, "save a dashboard of the attempt history")
    plotter.add_argument("--out", required=True, metavar="FILE", help="e.g. dashboard.png")
    plotter.add_argument(
        "--dpi", type=_positive_int, default=100, help="image resolution (default: %(default)s)"
    )
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 runtime error, 2 usage error,
    3 damaged database)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with a usage message on bad arguments
    if args.command == "worker":  # a long-running process: its log is its report
        _log_to_stderr(args.log_level)
    handler: Command = args.handler
    try:
        return asyncio.run(handler(args))
    except UsageError as exc:
        print(f"sitq: {_message(exc, args.db)}", file=sys.stderr)
        return 2
    except SitqError as exc:
        print(f"sitq: {type(exc).__name__}: {_message(exc, args.db)}", file=sys.stderr)
        return 3 if isinstance(exc, DatabaseCorruptError) else 1
    except KeyboardInterrupt:  # Ctrl-C during a short command: no traceback
        print("sitq: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT

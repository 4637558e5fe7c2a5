"""The command line: `sitq worker | enqueue | status | show | cancel | dead | requeue | purge
| prune | plot | lessons`.

Made for shells and scripts: results go to stdout, messages and logs to stderr, and the exit
code says what happened: 0 done, 1 a runtime error (no such task, a task in the wrong
state, database unusable...), 2 a usage error (bad arguments, no database there, an
unsupported database URL, a module that does not exist, a function or JSON argument
`enqueue` refuses), 3 the database file is damaged (a worker stops; restarting it will not
help). `sitq` and `python -m sitq` are the same program. Commands that only look (status,
show, dead, plot) open the database read-only: they work on a read-only copy, and never
wait for the write lock. Every command takes DB from `SITQ_DATABASE_URL` when it is left
out. Only `--create` (worker, enqueue) makes a new queue: elsewhere a SQLite path with no
file, or a PostgreSQL schema with no queue (a typo'd `?schema=`), is a usage error.

    sitq worker queue.db --create --import myapp.tasks --concurrency 8
    sitq enqueue queue.db myapp.tasks:add 1 2  (JSON arguments; --kwargs, --delay, --json)
    sitq status queue.db [--json] [--watch 2]  (redraw every 2 s until Ctrl-C)
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
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import suppress
from typing import Any

from sitq import __version__
from sitq.backends.urls import redacted, scrubbed
from sitq.cli.common import DATABASE_ENV, UsageError, open_database, serializer_for, shown
from sitq.cli.enqueue import add_command as add_enqueue_command
from sitq.cli.enqueue import (
    check_binding,
    load_function,
    parse_arguments,
    place_words,
    print_enqueued,
)
from sitq.cli.lessons import add_command as add_lessons_command
from sitq.cli.tasks import dead_line, task_json, task_lines
from sitq.cli.worker import run_worker
from sitq.clock import Clock, SystemClock
from sitq.engine.queue import TaskQueue
from sitq.errors import (
    DatabaseCorruptError,
    InvalidOptionError,
    MissingExtraError,
    QueueNotFoundError,
    SitqError,
    TaskStateError,
)
from sitq.policy import state
from sitq.task import TaskStatus

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]  # returns the exit code
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DB_HELP = (
    "a SQLite file (queue.db, sqlite:///queue.db) or a postgresql:// URL "
    f"(default: ${DATABASE_ENV})"
)
CLEAR_SCREEN = "\x1b[H\x1b[2J"  # cursor home, clear: each `status --watch` frame redraws
CONTINUATION = "    "  # starts every further line of a log record that spans lines


# -- the commands ---------------------------------------------------------------------------


async def show_status(args: argparse.Namespace) -> int:
    """Print how many tasks are in each state, then the total (or the counts as JSON).

    With --watch SECONDS, again every SECONDS until Ctrl-C (or --count frames): on a
    terminal each frame replaces the last; otherwise (a file, a pipe) frames follow each
    other, and with --json each is one line (JSON Lines)."""
    async with _open_queue(args, read_only=True) as queue:
        frames = 0
        while True:
            counts = await queue.counts()
            if args.watch is not None and not args.json:
                _frame_header(args, args.clock.now(), first=frames == 0)
            _print_counts(counts, args.json)
            frames += 1
            if args.watch is None or frames == args.count:
                return 0
            await args.clock.sleep_until(args.clock.now() + args.watch)


def _print_counts(counts: dict[TaskStatus, int], as_json: bool) -> None:
    if as_json:  # for scripts: {"queued": 0, "running": 1, ...}, every state listed
        print(json.dumps({str(status): n for status, n in counts.items()}), flush=True)
        return
    width = max(len(str(status)) for status in TaskStatus)
    for status, n in counts.items():
        print(f"{status!s:<{width}} {n:>8}")
    print(f"{'total':<{width}} {sum(counts.values()):>8}", flush=True)


def _frame_header(args: argparse.Namespace, now: float, first: bool) -> None:
    """A terminal is cleared for each frame; elsewhere a blank line separates them."""
    if sys.stdout.isatty():
        print(CLEAR_SCREEN, end="")
    elif not first:
        print()
    moment = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    print(f"{shown(redacted(args.db))} at {moment} (every {args.watch:g}s; Ctrl-C to stop)")


async def show_dead(args: argparse.Namespace) -> int:
    """One tab-separated line per dead letter: id, name, attempts, error type: message
    (or, with --json, one JSON array of them in full, tracebacks included).

    Attempts count those since the last requeue, out of the retry budget: "3 of 3 (6 in
    all)" for a task that failed again after a requeue (`sitq.cli.tasks.tries_text`)."""
    async with _open_queue(args, read_only=True) as queue:
        dead = await queue.backend.list_tasks(state.DEAD_LETTERS)  # rows: nothing unpickled
    if args.json:
        print(json.dumps([task_json(info) for info in dead]))
        return 0
    for info in dead:
        print(dead_line(info))
    if not dead:
        print("no dead letters", file=sys.stderr)
    return 0


async def show_task(args: argparse.Namespace) -> int:
    """One task in full: status, attempts, times, error and traceback, then its attempts."""
    async with _open_queue(args, read_only=True) as queue:
        info = await queue.get_task(args.task_id)
        history = await queue.history(args.task_id)
    if args.json:
        print(json.dumps(task_json(info, history)))
    else:
        print("\n".join(task_lines(info, history)))
    return 0


async def enqueue(args: argparse.Namespace) -> int:
    """Queue `module:function(*ARGS, **--kwargs)` and print its id (see sitq.cli.enqueue)."""
    func = load_function(args.function)  # before the database: a typo touches nothing
    call_args, kwargs = parse_arguments(args.arguments, args.kwargs)
    check_binding(func, args.function, call_args, kwargs)
    queue = _open_queue(args, create=args.create)
    try:  # checked before connecting: a bad option touches nothing
        view = queue.with_options(delay=args.delay, priority=args.priority)
    except InvalidOptionError as exc:
        raise UsageError(str(exc)) from exc
    async with queue:
        task_id = await view.enqueue(func, *call_args, **kwargs)
    print_enqueued(task_id, args.function, args.json)
    return 0


async def cancel(args: argparse.Namespace) -> int:
    """Cancel a waiting task, or ask a running one to stop; a finished task is an error
    (exit 1), and so is an unknown id."""
    async with _open_queue(args) as queue:
        changed = await queue.cancel(args.task_id)
        status = await queue.status(args.task_id)
    task_id = shown(args.task_id)
    if not changed:
        raise TaskStateError(f"task {task_id} already finished ({status}): nothing to cancel")
    if status is TaskStatus.CANCELLED:
        print(f"cancelled {task_id}")
    else:  # running: the worker sees the request at its next heartbeat
        print(f"asked {task_id} to stop: it is {status}, and its worker cancels it soon")
    return 0


async def requeue(args: argparse.Namespace) -> int:
    """Give a failed or cancelled task a fresh run; unknown ids are an error (exit 1).

    With --all, every dead letter gets one. A dead letter that someone else requeues in
    the meantime is skipped, not an error: it is running again either way.
    """
    async with _open_queue(args) as queue:
        if not args.all:
            await queue.requeue(args.task_id)
            print(f"requeued {shown(args.task_id)}")
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


def _open_queue(
    args: argparse.Namespace, read_only: bool = False, create: bool = False
) -> TaskQueue:
    """A queue on an existing database: inspecting a typo'd path must not create a file,
    nor a typo'd PostgreSQL ?schema= an empty queue (unless `create`: --create)."""
    backend = open_database(args.db, None if create else _missing_hint(args), read_only)
    return TaskQueue(backend, serializer_for(args))


def _missing_hint(args: argparse.Namespace) -> str:
    """How to make the missing queue: this command's --create, or a worker's."""
    if hasattr(args, "create"):
        return "or add --create to make one"
    return "or make one with `sitq worker DB --create`"


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
    parser = argparse.ArgumentParser(
        prog="sitq",
        description=__doc__.split("\n")[0],
        epilog=f"DB may be left out when {DATABASE_ENV} names the database.",
    )
    parser.add_argument("--version", action="version", version=f"sitq {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Command, text: str, epilog: str | None = None) -> Any:
        sub = commands.add_parser(
            name,
            help=text,
            description=text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the examples' lines
        )
        sub.add_argument("db", metavar="DB", nargs="?", help=DB_HELP)
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
        sub.set_defaults(handler=handler, parser=sub)
        return sub

    worker = command("worker", run_worker, "run tasks until SIGTERM/SIGINT", WORKER_EXAMPLES)
    worker.add_argument(
        "--create",
        action="store_true",
        help="make a new database (a SQLite file, a PostgreSQL schema) if DB has none "
        "(default: refuse, it may be a typo)",
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
    add_enqueue_command(command, enqueue)
    status = command("status", show_status, "count tasks in each state", STATUS_EXAMPLES)
    status.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    status.add_argument(
        "--watch",
        type=_positive_seconds,
        metavar="SECONDS",
        help="show the counts again every SECONDS until Ctrl-C (default: once)",
    )
    status.add_argument(
        "--count",
        type=_positive_int,
        metavar="N",
        help="with --watch: stop after N frames (default: until Ctrl-C)",
    )
    show = command("show", show_task, "show one task: status, attempts, times, error, "
                   "traceback and its attempts", SHOW_EXAMPLES)  # fmt: skip
    show.add_argument("task_id", metavar="ID", help="the task's id, as enqueue printed it")
    show.add_argument("--json", action="store_true", help="print it as one JSON object")
    canceller = command("cancel", cancel, "cancel a waiting task, or ask a running one to stop")
    canceller.add_argument("task_id", metavar="ID", help="the task to cancel")
    dead = command("dead", show_dead, "list dead letters: id, name, attempts, error", DEAD_EXAMPLES)
    dead.add_argument("--json", action="store_true", help="print them in full as one JSON array")
    requeuer = command("requeue", requeue, "give a failed or cancelled task a fresh run")
    requeuer.add_argument("task_id", nargs="?", metavar="ID", help="the task to run again")
    requeuer.add_argument("--all", action="store_true", help="requeue every dead letter")
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


WORKER_EXAMPLES = """\
examples:
  sitq worker queue.db --create --import myapp.tasks --concurrency 8
  sitq worker "postgresql://app@db.internal/jobs?schema=team_a" --import myapp.tasks
"""
STATUS_EXAMPLES = """\
examples:
  sitq status queue.db
  sitq status queue.db --json               # {"queued": 3, "running": 1, ...}
  sitq status queue.db --watch 2            # redraw every 2 s until Ctrl-C
"""
SHOW_EXAMPLES = """\
examples:
  sitq show queue.db 3f1c2a...
  sitq show queue.db 3f1c2a... --json | jq .traceback
"""
DEAD_EXAMPLES = """\
examples:
  sitq dead queue.db                        # id, name, attempts, error (tab-separated)
  sitq dead queue.db --json | jq '.[].id'

Attempts count those since the last requeue, out of the retry budget: "3 of 3 (6 in
all)" for a task that failed again after a requeue.
"""


def choose_database(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """Set `args.db`: as given, else from SITQ_DATABASE_URL; a usage error if neither.

    With DB left out, argparse may have put the next word in its place: `requeue ID`
    (when the environment names a database) is moved back where it belongs (`enqueue`
    places its words itself: `sitq.cli.enqueue.place_words`)."""
    fallback = environ.get(DATABASE_ENV, "")
    parser: argparse.ArgumentParser = args.parser
    if args.command == "requeue":
        if args.task_id is None and not args.all and args.db is not None and fallback:
            args.db, args.task_id = None, args.db
        if args.all and args.task_id is not None:
            parser.error("argument --all: not allowed with argument ID")
        if not args.all and args.task_id is None:
            parser.error("one of the arguments ID --all is required")
    if args.command == "status" and args.count is not None and args.watch is None:
        parser.error("--count needs --watch SECONDS")
    if args.db is None:
        if not fallback:
            parser.error(f"no database: give DB (a SQLite file or a URL) or set {DATABASE_ENV}")
        args.db = fallback


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
        f"?schema= ('sitq' if none), {_missing_hint(args)}"
    )

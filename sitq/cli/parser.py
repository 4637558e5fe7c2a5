"""The `sitq` program's arguments: every command, its options (each help ends with its
default) and examples, and where DB comes from when it is left out."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from sitq import __version__
from sitq.cli.commands import (
    cancel,
    enqueue,
    plot,
    prune,
    purge,
    requeue,
    show_dead,
    show_schedules,
    show_status,
    show_task,
)
from sitq.cli.common import DATABASE_ENV
from sitq.cli.enqueue import add_command as add_enqueue_command
from sitq.cli.lessons import add_command as add_lessons_command
from sitq.cli.worker import run_worker

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]  # returns the exit code
DESCRIPTION = "sitq's command line: run workers, queue tasks, inspect and repair a queue."
DB_HELP = (
    "a SQLite file (queue.db, sqlite:///queue.db) or a postgresql:// URL "
    f"(default: ${DATABASE_ENV})"
)


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
        description=DESCRIPTION,
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
    periodic = command("schedules", show_schedules, "list periodic tasks with their next tick")
    periodic.add_argument("--json", action="store_true", help="print them as a JSON list")
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

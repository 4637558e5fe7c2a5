"""The command line: `python -m sitq worker | status | dead | requeue | plot`.

Made for shells and scripts: results go to stdout, messages and logs to stderr, and the exit
code says what happened: 0 done, 1 a runtime error (no such task, database unusable...),
2 a usage error (bad arguments, an unsupported database URL, a module that does not exist).

    python -m sitq worker queue.db --import myapp.tasks --concurrency 8
    python -m sitq status queue.db
    python -m sitq dead queue.db
    python -m sitq requeue queue.db 3f1c...
    python -m sitq plot queue.db --out dashboard.png

A worker stops gracefully on SIGTERM or SIGINT (Ctrl-C): it stops claiming, lets running
tasks finish for up to `--grace` seconds, then hands the rest back to the queue without
using an attempt.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from sitq.backends.sqlite import SQLiteBackend
from sitq.errors import SitqError
from sitq.queue import TaskQueue
from sitq.serialization import CloudpickleSerializer, JsonSerializer, Serializer, SignedSerializer
from sitq.task import TaskStatus
from sitq.worker import Worker

SERVER_URL_PREFIXES = ("postgres://", "postgresql://", "mysql://", "redis://")


class UsageError(Exception):
    """The command line asks for something impossible: exit code 2."""


# -- the commands ---------------------------------------------------------------------------


async def run_worker(args: argparse.Namespace) -> int:
    """Run a worker until SIGTERM/SIGINT, then stop it gracefully."""
    for module in args.imports:
        _import(module)
    if args.serializer == "json" and not args.imports:
        logging.getLogger("sitq.cli").warning(
            "--serializer json without --import: rows may name any importable function"
        )
    worker = Worker(
        SQLiteBackend(_database_path(args.db)),
        _serializer(args),
        concurrency=args.concurrency,
        lease_seconds=args.lease,
        shutdown_grace=args.grace,
    )
    stop_requested = asyncio.Event()
    restore = _on_stop_signals(stop_requested.set)
    await worker.start()
    print(f"sitq worker {worker.worker_id} ready on {args.db}", flush=True)
    try:
        await stop_requested.wait()
        logging.getLogger("sitq.cli").info("stopping: grace %gs for running tasks", args.grace)
    finally:
        await worker.stop(args.grace)
        restore()
    print(f"sitq worker {worker.worker_id} stopped after {worker.processed} tasks", flush=True)
    return 0


async def show_status(args: argparse.Namespace) -> int:
    """Print how many tasks are in each state, then the total."""
    async with _open_queue(args) as queue:
        counts = await queue.counts()
    width = max(len(str(status)) for status in TaskStatus)
    for status, n in counts.items():
        print(f"{status!s:<{width}} {n:>8}")
    print(f"{'total':<{width}} {sum(counts.values()):>8}")
    return 0


async def show_dead(args: argparse.Namespace) -> int:
    """One tab-separated line per dead letter: id, name, attempts, error type: message."""
    async with _open_queue(args) as queue:
        dead = await queue.dead_letters()
    for result in dead:
        error = f"{result.error_type}: {result.error}" if result.error_type else result.error
        first_line = (error or "").splitlines()[0] if error else ""
        print(f"{result.task_id}\t{result.task_name}\t{result.attempts}\t{first_line}")
    if not dead:
        print("no dead letters", file=sys.stderr)
    return 0


async def requeue(args: argparse.Namespace) -> int:
    """Give a failed or cancelled task a fresh run; unknown ids are an error (exit 1)."""
    async with _open_queue(args) as queue:
        await queue.requeue(args.task_id)
    print(f"requeued {args.task_id}")
    return 0


async def plot(args: argparse.Namespace) -> int:
    """Save `sitq.plots.dashboard` of the whole attempt history as an image."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window: works on servers and in CI
    import matplotlib.pyplot as plt

    from sitq.plots import dashboard

    async with _open_queue(args) as queue:
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


def _on_stop_signals(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` on SIGTERM or SIGINT (once is enough: later signals change nothing).

    Returns a function that restores the previous handlers.
    """
    loop = asyncio.get_running_loop()
    signums = (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.getsignal(signum) for signum in signums}
    try:
        for signum in signums:
            loop.add_signal_handler(signum, callback)
    except NotImplementedError:  # Windows: no loop signal handlers, so plain ones
        for signum in signums:
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(callback))

    def restore() -> None:
        for signum, handler in previous.items():
            with suppress(NotImplementedError):
                loop.remove_signal_handler(signum)
            signal.signal(signum, handler)

    return restore


def _database_path(db: str) -> str:
    """The SQLite path to open; server URLs are refused with a usage error."""
    if db.lower().startswith(SERVER_URL_PREFIXES):
        scheme = db.split(":", 1)[0]
        raise UsageError(
            f"{scheme} URLs are not supported in this version: sitq stores tasks in SQLite. "
            "Give the path of a database file, e.g. queue.db"
        )
    return db


def _open_queue(args: argparse.Namespace) -> TaskQueue:
    """A queue on an existing database: inspecting a typo'd path must not create a file."""
    path = _database_path(args.db)
    if not path.startswith("file:") and path != ":memory:" and not Path(path).is_file():
        raise SitqError(f"no database at {path!r} (check the path; workers create it)")
    return TaskQueue(SQLiteBackend(path), _serializer(args))


def _serializer(args: argparse.Namespace) -> Serializer:
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


def _import(module: str) -> None:
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
    parser = argparse.ArgumentParser(prog="python -m sitq", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[..., Awaitable[int]], text: str) -> Any:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("db", metavar="DB", help="the SQLite database file")
        sub.add_argument("--serializer", choices=("pickle", "json"), default="pickle")
        sub.add_argument(
            "--signing-key-env",
            metavar="VAR",
            help="verify/sign payloads with the key in environment variable VAR",
        )
        sub.set_defaults(handler=handler)
        return sub

    worker = command("worker", run_worker, "run tasks until SIGTERM/SIGINT")
    worker.add_argument("--concurrency", type=_positive_int, default=10, metavar="N")
    worker.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module of tasks first (repeatable)",
    )
    worker.add_argument(
        "--lease",
        type=_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long a claim lasts without a heartbeat (renewed every third of it)",
    )
    worker.add_argument(
        "--grace",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, wait this long for running tasks before handing them back",
    )
    worker.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), type=str.upper
    )
    command("status", show_status, "count tasks in each state")
    command("dead", show_dead, "list dead letters: id, name, attempts, error")
    command("requeue", requeue, "give a failed or cancelled task a fresh run").add_argument(
        "task_id", metavar="ID"
    )
    plotter = command("plot", plot, "save a dashboard of the attempt history")
    plotter.add_argument("--out", required=True, metavar="FILE", help="e.g. dashboard.png")
    plotter.add_argument("--dpi", type=_positive_int, default=100)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 runtime error, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with a usage message on bad arguments
    if args.command == "worker":  # a long-running process: its log is its report
        logging.basicConfig(
            level=args.log_level,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    try:
        return asyncio.run(args.handler(args))
    except UsageError as exc:
        print(f"sitq: {exc}", file=sys.stderr)
        return 2
    except SitqError as exc:
        print(f"sitq: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1

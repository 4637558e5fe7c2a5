"""`sitq worker`: run a worker until a signal, and what two signals in a row mean.

A worker stops gracefully on SIGTERM or SIGINT (Ctrl-C): it stops claiming, lets running
tasks finish for up to `--grace` seconds, then hands the rest back to the queue without
using an attempt, and exits 0. A second signal exits at once (exit code 128 + signal
number, 130 for Ctrl-C): tasks still running are abandoned and run again once their lease
expires. Ctrl-C in a terminal reaches the whole process group; the worker's pool
processes ignore it (`sitq.engine.pools.ProcessPool`), so it counts once, and they end with the
worker.
A worker whose database file is damaged stops by itself and exits with code 3.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import NoReturn

from sitq.backends.urls import redacted
from sitq.cli.common import import_task_module, open_database, serializer_for
from sitq.engine.hooks import WorkerHooks
from sitq.engine.worker import Worker


class StopWhenBroken(WorkerHooks):
    """Ends `sitq worker` when its worker stops by itself (a damaged database)."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self.stop = stop
        self.error: BaseException | None = None

    def on_worker_stopped(self, worker_id: str, error: BaseException) -> None:
        self.error = error
        self.stop()


async def run_worker(args: argparse.Namespace) -> int:
    """Run a worker until SIGTERM/SIGINT, then stop it gracefully."""
    backend = open_database(args.db, None if args.create else "or add --create to make one")
    for module in args.imports:
        import_task_module(module)
    if args.serializer == "json" and not args.imports:
        logging.getLogger("sitq.cli").warning(
            "--serializer json without --import: rows may name any importable function"
        )
    stop_requested = asyncio.Event()
    broken = StopWhenBroken(stop_requested.set)
    worker = Worker(
        backend,
        serializer_for(args),
        hooks=broken,
        concurrency=args.concurrency,
        lease_seconds=args.lease,
        shutdown_grace=args.grace,
    )
    restore = _on_stop_signals(stop_requested.set)
    await worker.start()
    print(f"sitq worker {worker.worker_id} ready on {redacted(args.db)}", flush=True)
    try:
        await stop_requested.wait()
        if broken.error is None:
            logging.getLogger("sitq.cli").info(
                "stopping: grace %gs for running tasks (signal again to exit at once)",
                args.grace,
            )
    finally:
        await worker.stop(args.grace)
        restore()
    if broken.error is not None:
        raise broken.error  # `sitq.cli.main` prints it and exits 3
    print(f"sitq worker {worker.worker_id} stopped after {worker.processed} tasks", flush=True)
    return 0


def _on_stop_signals(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` on the first SIGTERM or SIGINT; exit at once on the second.

    The first signal asks for a graceful stop, which may take up to `--grace` seconds.
    Someone who signals again will not wait (Celery and RQ workers behave the same), so
    the second one ends the process. Returns a function that restores the previous
    handlers, unless a stop was asked for: then a later signal still exits at once.
    """
    loop = asyncio.get_running_loop()
    signums = (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.getsignal(signum) for signum in signums}
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            callback()
        else:
            _exit_now(signum)

    try:
        for signum in signums:
            loop.add_signal_handler(signum, on_signal, signum)
    except NotImplementedError:  # Windows: no loop signal handlers, so plain ones
        for signum in signums:
            signal.signal(signum, lambda s, _: loop.call_soon_threadsafe(on_signal, s))

    def restore() -> None:
        for signum, handler in previous.items():
            with suppress(NotImplementedError):
                loop.remove_signal_handler(signum)
            signal.signal(signum, (lambda s, _: _exit_now(s)) if received else handler)

    return restore


def _exit_now(signum: int) -> NoReturn:
    """End the process without waiting for anything: exit code 128 + signum, like a shell.

    `sys.exit` would not do: the interpreter waits at exit for every task thread to end
    (a thread cannot be stopped). Tasks still running stay claimed in the database; once
    their lease expires another worker runs them again, which counts as an attempt.
    """
    name = signal.Signals(signum).name
    logging.getLogger("sitq.cli").warning(
        "%s again: exiting now; running tasks run again once their lease expires", name
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)

"""The commands that work on a queue: each takes the parsed arguments and returns the exit
code (errors are raised, and `sitq.cli.main` turns them into messages and exit codes)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from contextlib import suppress

from sitq.backends.urls import redacted
from sitq.cli.common import UsageError, open_database, serializer_for, shown
from sitq.cli.enqueue import check_binding, load_function, parse_arguments, print_enqueued
from sitq.cli.schedules import list_schedules, print_schedules
from sitq.cli.tasks import dead_line, task_json, task_lines
from sitq.engine.queue import TaskQueue
from sitq.errors import InvalidOptionError, MissingExtraError, SitqError, TaskStateError
from sitq.policy import state
from sitq.task import TaskStatus

CLEAR_SCREEN = "\x1b[H\x1b[2J"  # cursor home, clear: each `status --watch` frame redraws


async def show_status(args: argparse.Namespace) -> int:
    """Print how many tasks are in each state, then the total (or the counts as JSON), then
    the periodic tasks, if any, with their next tick (`sitq schedules` says more).

    With --watch SECONDS, again every SECONDS until Ctrl-C (or --count frames): on a
    terminal each frame replaces the last; otherwise (a file, a pipe) frames follow each
    other, and with --json each is one line (JSON Lines)."""
    async with open_queue(args, read_only=True) as queue:
        frames = 0
        while True:
            counts = await queue.counts()
            schedules = [] if args.json else await queue.schedules()
            if args.watch is not None and not args.json:
                _frame_header(args, args.clock.now(), first=frames == 0)
            _print_counts(counts, args.json)
            print_schedules(schedules)
            frames += 1
            if args.watch is None or frames == args.count:
                return 0
            await args.clock.sleep_until(args.clock.now() + args.watch)


async def show_schedules(args: argparse.Namespace) -> int:
    """`sitq schedules`: the periodic tasks (`sitq.cli.schedules.list_schedules`)."""
    async with open_queue(args, read_only=True) as queue:
        return list_schedules(await queue.schedules(), args)


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
    async with open_queue(args, read_only=True) as queue:
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
    async with open_queue(args, read_only=True) as queue:
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
    queue = open_queue(args, create=args.create)
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
    async with open_queue(args) as queue:
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
    async with open_queue(args) as queue:
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
    async with open_queue(args) as queue:
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

    async with open_queue(args, read_only=True) as queue:
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


def open_queue(
    args: argparse.Namespace, read_only: bool = False, create: bool = False
) -> TaskQueue:
    """A queue on an existing database: inspecting a typo'd path must not create a file,
    nor a typo'd PostgreSQL ?schema= an empty queue (unless `create`: --create)."""
    backend = open_database(args.db, None if create else missing_hint(args), read_only)
    return TaskQueue(backend, serializer_for(args))


def missing_hint(args: argparse.Namespace) -> str:
    """How to make the missing queue: this command's --create, or a worker's."""
    if hasattr(args, "create"):
        return "or add --create to make one"
    return "or make one with `sitq worker DB --create`"


async def prune(args: argparse.Namespace) -> int:
    """Delete succeeded and cancelled tasks older than --older-than (dead letters stay)."""
    async with open_queue(args) as queue:
        pruned = await queue.prune(args.older_than)
    print(f"pruned {pruned} finished task{'' if pruned == 1 else 's'}")
    return 0


def _dead_letters(n: int) -> str:
    return f"{n} dead letter" if n == 1 else f"{n} dead letters"

"""`sitq enqueue DB module:function ARGS...`: queue one call from a shell, a cron job or CI.

The function is named by import path, as a JSON row names it (`myapp.tasks:resize`), and
checked the way a worker's `--import` allow-list checks a row: only the module named is
imported (with the packages it sits in, as any import; never a submodule it does not
name), and the name must be a function
(`def` or `async def`) *defined* in that module, not a class, not a callable object, not
something the module merely imported (`myapp.tasks:os.system` is refused). So the command
runs no code but that module's import.

Each ARG is one JSON value: `3`, `2.5`, `true`, `null`, `'"a string"'`, `'[1, 2]'`,
`'{"k": "v"}'`; `--kwargs '{"width": 200}'` gives keyword arguments. A bare word is not a
string: `hello` is refused with a hint to write `'"hello"'`, so `007` or `1e3` can never
turn silently into something else. The arguments are bound to the function's signature
before anything is stored, so a wrong count or an unknown keyword fails here (exit 2),
not later in a worker.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from typing import Any

from sitq.cli.common import UsageError, import_task_module, shown
from sitq.errors import SerializationError
from sitq.wire.json_serialization import resolve_defined_function
from sitq.wire.serialization import TaskNotAllowedError

#: `package.module:function` (or `module:Class.method`): Python names around one colon.
FUNCTION_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

EXAMPLES = """\
examples:
  sitq enqueue queue.db myapp.tasks:add 1 2
  sitq enqueue queue.db myapp.tasks:resize '"photo.png"' --kwargs '{"width": 200}'
  sitq enqueue queue.db myapp.tasks:report --delay 3600 --priority 10 --json
  SITQ_DATABASE_URL=postgresql://app@db/jobs sitq enqueue myapp.tasks:add 1 2

Each ARG is a JSON value: numbers, true/false/null, lists and objects as they are,
strings in double quotes inside shell quotes ('"text"'). Prints the new task's id.
"""


def is_function_path(text: str | None) -> bool:
    """Does `text` read as `module:function`? (A database path or URL does not: a URL
    has "://", and a JSON argument never starts with a letter followed by a colon.)"""
    return text is not None and FUNCTION_PATH.fullmatch(text) is not None


def load_function(path: str) -> Any:
    """Import the function `module:qualname` names, checked like a worker's allow-list."""
    if not is_function_path(path):
        dotted = path.rpartition(".")
        example = f"{dotted[0]}:{dotted[2]}" if dotted[1] and ":" not in path else "myapp.tasks:add"
        raise UsageError(
            f"{shown(path)!r} is not an import path: write the module, a colon and the "
            f"function defined there, e.g. {example}"
        )
    module = path.partition(":")[0]
    import_task_module(module, path)  # the current folder on sys.path, like `python -m`
    try:
        return resolve_defined_function(path)
    except TaskNotAllowedError as exc:  # the allow-list's reason, without its words on rows
        reason = str(exc).partition("before running: ")[2].partition(". With modules=")[0]
        raise UsageError(
            f"{path}: {reason or exc}; sitq enqueue takes a function (def or async def) "
            "named as module:function in the module that defines it"
        ) from exc
    except SerializationError as exc:  # no such name there
        raise UsageError(f"{exc} (check the spelling: module:function)") from exc


def parse_arguments(texts: list[str], kwargs_text: str | None) -> tuple[list[Any], dict[str, Any]]:
    """The JSON values of ARGS and of --kwargs (an object)."""
    args = [_json(text, f"argument {n}") for n, text in enumerate(texts, start=1)]
    kwargs: Any = {} if kwargs_text is None else _json(kwargs_text, "--kwargs")
    if not isinstance(kwargs, dict):
        raise UsageError(
            f"--kwargs must be a JSON object of keyword arguments, e.g. '{{\"width\": 200}}'; "
            f"got {shown(kwargs_text or '')}"
        )
    return args, kwargs


def check_binding(func: Any, path: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Refuse arguments the function cannot take, before the task is stored."""
    try:
        inspect.signature(func).bind(*args, **kwargs)
    except TypeError as exc:
        raise UsageError(f"{path}{inspect.signature(func)}: {exc}") from exc
    except ValueError:  # no signature to check against (some builtins): the worker will say
        pass


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{what} {shown(text)!r} is not JSON ({exc.msg}): each ARG is one JSON value; "
            f"write a string in double quotes inside shell quotes, e.g. '\"{shown(text)}\"'"
        ) from None


def add_command(command: Any, handler: Any) -> None:
    """Register `sitq enqueue`; `command` is `build_parser`'s maker of database commands."""
    enqueue = command(
        "enqueue",
        handler,
        "queue one call of a function, given by import path, with JSON arguments",
        epilog=EXAMPLES,
    )
    enqueue.usage = "%(prog)s [DB] module:function [ARG ...] [options]"
    enqueue.add_argument(
        "words",  # DB, module:function, ARGS: options may come between them (`place_words`)
        nargs="*",
        metavar="module:function ARG",
        help="e.g. myapp.tasks:add (a function defined there), then one JSON value per ARG",
    )
    enqueue.add_argument(
        "--kwargs", metavar="JSON", help="keyword arguments as a JSON object, e.g. '{\"n\": 2}'"
    )
    enqueue.add_argument(
        "--delay",
        type=float,
        metavar="SECONDS",
        help="run no sooner than this many seconds from now (default: at once)",
    )
    enqueue.add_argument("--priority", type=int, metavar="N", help="higher runs first (default: 0)")
    enqueue.add_argument(
        "--json", action="store_true", help='print {"id": ..., "task": ...} instead of the id'
    )
    enqueue.add_argument(
        "--create",
        action="store_true",
        help="make a new database if DB has none (default: refuse, it may be a typo)",
    )


def place_words(args: argparse.Namespace, extra: list[str]) -> None:
    """Set args.db, args.function and args.arguments from the words given (those argparse
    left over after an option, `extra`, follow on). DB may be left out (SITQ_DATABASE_URL):
    then the first word has the module:function shape, and the second has not (two such
    words: the first is a path like C:queue.db)."""
    unknown = [word for word in extra if word.startswith("--")]
    if unknown:
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    words = [*([] if args.db is None else [args.db]), *args.words, *extra]  # DB took the first
    db_left_out = bool(words) and is_function_path(words[0])
    if db_left_out and len(words) > 1 and is_function_path(words[1]):
        db_left_out = False
    args.db = None if db_left_out or not words else words.pop(0)
    if not words:
        args.parser.error("the following arguments are required: module:function")
    args.function, args.arguments = words[0], words[1:]


def print_enqueued(task_id: str, path: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"id": task_id, "task": path}))
    else:
        print(task_id)
    sys.stdout.flush()

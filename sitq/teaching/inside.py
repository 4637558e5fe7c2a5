"""Read the engine from the inside: its source, its SQL and one task's route, found at run time.

Lesson 16 follows one task through sitq (`sitq.teaching.trace`) and then reads the code the
task went through. sitq's engine changes: modules merge, functions move, statements get
new names. So nothing here names a file or copies a line of source. Every block shown is
read from the running code (`inspect`, `ast`), every statement from the backend's own
modules, and the landmarks a lesson checks are the ones that stay true however the engine
is arranged: a task is claimed, run, decided by `sitq.policy.state`, and settled.
"""

from __future__ import annotations

import ast
import html
import importlib
import inspect
import pkgutil
import re
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sitq import TaskQueue, Worker  # the public names: they stay wherever the code moves
from sitq.policy import state
from sitq.teaching.trace import Call, Route

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: The fencing token raised: what makes a statement a claim (`t.lease_token` in a join too).
RAISES_TOKEN = re.compile(r"lease_token\s*=\s*(\w+\.)?lease_token\s*\+\s*1")
#: The fencing token checked: `lease_token = :token`, `= $2`, `= ?` or `= s.token`.
CHECKS_TOKEN = re.compile(r"WHERE[\s\S]*lease_token\s*=\s*([:$]\w+|\?|\w+\.token)")

_BLOCK = (
    "margin:0;padding:6px 8px;background:#f7f7f7;border-radius:4px;overflow-x:auto;"
    "white-space:pre;font-size:11.5px;line-height:1.35"
)


@dataclass(frozen=True)
class Source:
    """A block of code to read: Python or SQL, with a title saying where it lives."""

    title: str
    text: str
    language: str = "python"

    def __str__(self) -> str:
        return f"{self.title}\n{self.text}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return side_by_side(self)._repr_html_()

    def html_block(self) -> str:
        """The code as a highlighted <pre> block, styled inline (a page has no stylesheet)."""
        try:
            from pygments import highlight
            from pygments.formatters import HtmlFormatter
            from pygments.lexers import PythonLexer, SqlLexer
        except ImportError:  # pygments comes with IPython; without it, plain text
            body = html.escape(self.text)
        else:
            lexer = SqlLexer() if self.language == "sql" else PythonLexer()
            body = highlight(self.text, lexer, HtmlFormatter(nowrap=True, noclasses=True))
        title = f"<div style='font-weight:bold;margin:2px 0'>{html.escape(self.title)}</div>"
        return f"{title}<pre style='{_BLOCK}'>{body}</pre>"


@dataclass(frozen=True)
class Columns:
    """Two or three sources side by side, to read one against the other."""

    sources: tuple[Source, ...]

    def __str__(self) -> str:
        return "\n\n".join(str(source) for source in self.sources)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        columns = "".join(
            f"<div style='flex:1 1 0;min-width:280px'>{source.html_block()}</div>"
            for source in self.sources
        )
        return f"<div style='display:flex;gap:12px;align-items:flex-start'>{columns}</div>"


def side_by_side(*sources: Source) -> Columns:
    """Show `sources` as columns (in a notebook; as text one after another elsewhere)."""
    return Columns(sources)


def source_of(obj: Any, title: str | None = None) -> Source:
    """The source of a function, method or class as it is in the running sitq."""
    function = inspect.unwrap(obj)
    name = title or f"{function.__module__}.{function.__qualname__}"
    return Source(name, textwrap.dedent(inspect.getsource(function)).rstrip())


# -- who asks: functions that call a given function ---------------------------------------


def callers(function: Callable[..., Any], route: Route) -> list[Source]:
    """The functions the route entered whose own body calls `function` by its name.

    Found by reading the syntax tree (`ast`) of each module the route entered, so it finds
    the caller wherever it lives today: "who, on this task's path, asked". A function
    nested in another is searched on its own.
    """
    name = function.__name__
    entered = {(call.module, call.function) for call in route.calls}
    found = []
    for module_name in route.modules:
        source = inspect.getsource(importlib.import_module(module_name))
        for qualname, node in _functions(ast.parse(source).body, ""):
            if (module_name, qualname) not in entered:
                continue
            if any(_called_name(call) == name for call in _own_calls(node)):
                found.append(Source(f"{module_name}.{qualname}", _segment(source, node)))
    return found


Function = ast.FunctionDef | ast.AsyncFunctionDef


def _functions(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, Function]]:
    for node in body:
        if isinstance(node, ast.ClassDef):
            yield from _functions(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{prefix}{node.name}", node
            yield from _functions(node.body, f"{prefix}{node.name}.<locals>.")


def _own_calls(function: Function) -> Iterator[ast.Call]:
    """The calls in a function's body, not in the functions or classes defined inside it."""
    stack = list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if isinstance(node, ast.Call):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return call.func.id if isinstance(call.func, ast.Name) else None


def _segment(source: str, node: Function) -> str:
    """The lines of `node`, its decorators included, dedented."""
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    lines = source.splitlines()[first - 1 : node.end_lineno]
    return textwrap.dedent("\n".join(lines)).rstrip()


# -- the backend's SQL ---------------------------------------------------------------------


def storage_package(backend: object) -> str:
    """The package holding a backend's code: `sitq.backends.sqlite` for SQLiteBackend."""
    kind = backend if isinstance(backend, type) else type(backend)
    return kind.__module__.rpartition(".")[0] or kind.__module__


def statements(backend: object) -> dict[str, str]:
    """Every SQL statement the backend's modules define (an UPPER_CASE string constant
    holding an UPDATE, INSERT, DELETE or SELECT), as {"module.NAME": text}, in order."""
    package = importlib.import_module(storage_package(backend))
    modules = [package]
    if hasattr(package, "__path__"):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            modules.append(importlib.import_module(info.name))
    found = {}
    for module in modules:
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str) and _is_sql(value):
                found[f"{module.__name__}.{name}"] = value
    return found


def _is_sql(text: str) -> bool:
    return re.search(r"\b(UPDATE|INSERT|DELETE|SELECT)\b", text) is not None


def claim_sql(backend: object) -> Source:
    """The statement that claims due tasks: named for the claim, and raising the fencing
    token (`lease_token = lease_token + 1`) as it hands the rows to one worker."""
    return _statement(backend, "CLAIM", RAISES_TOKEN, "claims (raises lease_token)")


def settle_sql(backend: object) -> Source:
    """The statement that stores an outcome: named for settling, and checking the fencing
    token in its WHERE, so an outcome from a worker that lost its lease changes nothing."""
    return _statement(backend, "SETTLE", CHECKS_TOKEN, "settles (checks lease_token)")


def _statement(backend: object, word: str, shape: re.Pattern[str], what: str) -> Source:
    shaped = {name: text for name, text in statements(backend).items() if shape.search(text)}
    named = [name for name in shaped if word in name.rpartition(".")[2]]
    if not (named or shaped):
        raise LookupError(f"no statement in {storage_package(backend)} that {what}")
    name = (named or list(shaped))[0]
    text = re.sub(r"\n\s*\n", "\n", textwrap.dedent(shaped[name]).strip())  # no blank lines
    return Source(name, text, "sql")


#: A status stored as given: `status = :status`, `= $3`, `= ?` or `= s.status`.
STATUS_GIVEN = re.compile(r"\bstatus\s*=\s*([:$]\w+|\?|\w+\.status)")


def sql_checks(backend: object) -> dict[str, bool]:
    """What the claim and the settle statements show, whatever the backend: the claim
    raises the fencing token, the settle checks it, and the settle stores the status it is
    given (a parameter), so the choice of status is made in Python, by `sitq.policy.state`."""
    claim, settle = claim_sql(backend).text, settle_sql(backend).text
    return {
        "the claim raises the fencing token (lease_token + 1)": bool(RAISES_TOKEN.search(claim)),
        "the settle checks the fencing token in its WHERE": bool(CHECKS_TOKEN.search(settle)),
        "the settle stores the status it is given": bool(STATUS_GIVEN.search(settle)),
    }


# -- the route: where enqueue, run_once and get_result begin, and what holds -------------

#: The three public calls a lesson makes, in order: the route's three parts.
ENTRY_POINTS: dict[str, Callable[..., Any]] = {
    "enqueue": TaskQueue.enqueue,
    "run_once": Worker.run_once,
    "get_result": TaskQueue.get_result,
}


def first_call(route: Route, function: Callable[..., Any]) -> Call | None:
    """The first call of `function` on the route (matched by module and qualified name)."""
    function = inspect.unwrap(function)
    for call in route.calls:
        if call.module == function.__module__ and call.function == function.__qualname__:
            return call
    return None


def parts(route: Route) -> list[tuple[str, int, int]]:
    """(label, first step, step after its last) for enqueue, run_once and get_result."""
    starts = [(label, first_call(route, f)) for label, f in ENTRY_POINTS.items()]
    found = [(label, call.step) for label, call in starts if call is not None]
    ends = [step for _, step in found[1:]] + [len(route.calls)]
    return [(label, start, end) for (label, start), end in zip(found, ends, strict=True)]


def landmarks(route: Route, backend: object) -> dict[str, bool]:
    """What every route of one successful task shows, however the engine is arranged.

    claim -> run -> decide -> settle: the worker's turn calls the backend (the claim)
    before `state.after_attempt` decides, once, and calls it again (the settle) before
    `get_result` reads the outcome back through the backend.
    """
    storage = storage_package(backend)
    steps = {label: start for label, start, _ in parts(route)}
    decide = [c.step for c in route.calls if _is(c, state.after_attempt)]
    stored = [c.step for c in route.calls if c.module.startswith(storage)]
    run, read = steps.get("run_once", -1), steps.get("get_result", -1)
    decided = decide[0] if decide else -1
    return {
        "it starts with the queue's enqueue": bool(route.calls)
        and _is(route.calls[0], TaskQueue.enqueue),
        "enqueue, run_once and get_result come in that order": list(steps) == list(ENTRY_POINTS)
        and sorted(steps.values()) == list(steps.values()),
        "the worker's turn calls the backend (the claim) before the decision": any(
            run < s < decided for s in stored
        ),
        "state.after_attempt decides, once": len(decide) == 1,
        "the backend is called again (the settle) before get_result": any(
            decided < s < read for s in stored
        ),
        "get_result reads the outcome through the backend": any(s > read for s in stored),
    }


def _is(call: Call, function: Callable[..., Any]) -> bool:
    function = inspect.unwrap(function)
    return call.module == function.__module__ and call.function == function.__qualname__


def modules_table(route: Route) -> str:
    """One line per module in the order first entered: its first step, how many calls, and
    the first function the route entered there."""
    counts = Counter(call.module for call in route.calls)
    first: dict[str, Call] = {}
    for call in route.calls:
        first.setdefault(call.module, call)
    lines = [f"{'step':>4}  {'calls':>5}  module (first function entered)"]
    for module in route.modules:
        call = first[module]
        lines.append(f"{call.step:>4}  {counts[module]:>5}  {module} ({call.function})")
    return "\n".join(lines)


def draw(route: Route, ax: Axes | None = None) -> Axes:
    """The route (`Route.figure`), with its three parts shaded and the decision marked."""
    ax = route.figure(ax)
    top = -0.5  # the first row is at 0, drawn at the top (the y axis is inverted)
    for number, (label, start, end) in enumerate(parts(route)):
        ax.axvspan(start - 0.5, end - 0.5, color=f"C{number}", alpha=0.07, linewidth=0)
        ax.text(start, top, label, fontsize=8, va="bottom", color="0.3")
    for call in route.calls:
        if _is(call, state.after_attempt):
            ax.axvline(call.step, color="C3", linestyle="--", linewidth=1)
            ax.text(call.step + 1, top, "state decides", fontsize=8, va="bottom", color="C3")
    return ax

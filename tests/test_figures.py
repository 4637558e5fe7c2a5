"""Every lesson figure, compared as a picture with a committed baseline image.

nbval compares a notebook's text outputs but not its images, so a plot that quietly
changes (a label lost, a panel left empty, a series drawn twice) would pass it. This test
runs each lesson that draws figures in a fresh kernel, exactly as written (the same data
and the same plot calls), saves every figure the lesson shows, and compares each with
tests/baseline/<lesson>-<k>.png using matplotlib's own `compare_images`.

What makes the pictures repeatable: the lessons run on a FakeClock with seeded random
generators; here matplotlib is pinned too (Agg, the default style, the DejaVu Sans font
that ships with matplotlib, 72 dpi), and task ids, which are random by design and appear
in row labels and row order, come from a seeded generator in the kernel.

A cell tagged `figure-varies` draws from real timings; its figures are run but not
compared. After an intended change, look at the new pictures, then rewrite the baselines:

    SITQ_UPDATE_BASELINES=1 .venv/bin/pytest -p no:cacheprovider tests/test_figures.py
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import nbformat
import pytest
from matplotlib.testing.compare import compare_images
from matplotlib.testing.exceptions import ImageComparisonFailure
from nbclient import NotebookClient

from sitq import plots
from sitq.task import Attempt

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BASELINES = Path(__file__).resolve().parent / "baseline"
UPDATE = os.environ.get("SITQ_UPDATE_BASELINES") == "1"
#: Root-mean-square difference allowed, in grey levels (0-255). Rendering with the same
#: matplotlib is exact (0.0), and one changed character in a label of the largest figure
#: (the dashboard) measured 0.51: test_comparison_catches_a_changed_label keeps it so.
TOLERANCE = 0.1
VARIES_TAG = "figure-varies"
#: The matplotlib settings every figure is drawn with, in the test and in the kernel.
RC = {"font.family": "DejaVu Sans", "figure.dpi": 72, "savefig.dpi": 72}

#: Runs first in the lesson's kernel: pin matplotlib, seed task ids, save shown figures.
PREAMBLE = """
import json as _json, random as _random, uuid as _uuid
from pathlib import Path as _Path
import matplotlib as _mpl
_mpl.use("Agg")
_mpl.rcdefaults()
_mpl.rcParams.update({rc!r})
import matplotlib.pyplot as _plt

_ids = _random.Random(20261128)
_uuid.uuid4 = lambda: _uuid.UUID(int=_ids.getrandbits(128), version=4)  # repeatable task ids
import sitq.engine.queue as _queue
_queue.new_task_ids = lambda n: [str(_uuid.uuid4()) for _ in range(n)]  # seeded ids

_out, _shown, _cell = _Path({out!r}), [], {{"index": -1, "varies": False}}


def _save_figures(*args, **kwargs):
    for number in _plt.get_fignums():
        figure = _plt.figure(number)
        path = _out / f"{{len(_shown) + 1:02d}}.png"
        figure.savefig(path, bbox_inches="tight", metadata={{"Software": None}})  # as shown
        titles = [figure.get_suptitle()] + [ax.get_title() for ax in figure.axes]
        _shown.append({{**_cell, "path": str(path), "title": next(filter(None, titles), "")}})
    _plt.close("all")
    (_out / "shown.json").write_text(_json.dumps(_shown))


_plt.show = _save_figures
get_ipython().events.register("post_run_cell", lambda result: _save_figures())
"""


@dataclass(frozen=True)
class Shown:
    """One figure a lesson showed: where it was saved, and which cell drew it."""

    path: Path
    index: int  # the cell's position in the lesson
    varies: bool  # drawn from real timings: not compared
    title: str


def lessons_with_figures() -> list[Path]:
    """Lessons whose committed outputs hold at least one image."""
    return [p for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) if committed_images(p)]


def committed_images(path: Path) -> int:
    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return sum("image/png" in o.get("data", {}) for o in outputs)


def run_lesson(path: Path, out: Path) -> list[Shown]:
    """Execute the lesson in a fresh kernel and return the figures it showed, in order."""
    nb = nbformat.read(path, as_version=4)
    cells = [nbformat.v4.new_code_cell(PREAMBLE.format(rc=RC, out=str(out)))]
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        varies = VARIES_TAG in cell.metadata.get("tags", [])
        cells.append(nbformat.v4.new_code_cell(f"_cell.update(index={index}, varies={varies})"))
        lines = cell.source.splitlines()
        cell.source = "\n".join(line for line in lines if not line.startswith("%matplotlib"))
        cells.append(cell)
    nb.cells = cells
    env = {**os.environ, "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}
    client = NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=env)
    shown = json.loads((out / "shown.json").read_text()) if (out / "shown.json").exists() else []
    return [Shown(Path(s["path"]), s["index"], s["varies"], s["title"]) for s in shown]


def compare(shown: Shown, baseline: Path) -> str | None:
    """None if the figure matches its baseline, else why not (a diff image is left beside)."""
    if UPDATE:
        BASELINES.mkdir(exist_ok=True)
        shutil.copyfile(shown.path, baseline)
        return None
    if not baseline.exists():
        return f"{baseline.name}: no baseline (run with SITQ_UPDATE_BASELINES=1 to create it)"
    try:
        return compare_images(str(baseline), str(shown.path), TOLERANCE)
    except ImageComparisonFailure as failure:  # e.g. the figure changed size
        return f"{baseline.name}: {failure}"


@pytest.mark.parametrize("lesson", lessons_with_figures(), ids=lambda p: p.stem)
def test_lesson_figures_match_their_baselines(lesson: Path, tmp_path: Path) -> None:
    shown = run_lesson(lesson, tmp_path)

    assert len(shown) == committed_images(lesson), "the committed outputs are out of date"
    compared = [s for s in shown if not s.varies]
    problems = []
    for k, figure in enumerate(compared, start=1):
        problem = compare(figure, BASELINES / f"{lesson.stem}-{k:02d}.png")
        if problem:
            problems.append(f"cell {figure.index} ({figure.title!r}): {problem}")
    expected = {f"{lesson.stem}-{k:02d}.png" for k in range(1, len(compared) + 1)}
    for stale in set(p.name for p in BASELINES.glob(f"{lesson.stem}-*.png")) - expected:
        if UPDATE:
            (BASELINES / stale).unlink()
        else:
            problems.append(f"{stale}: a baseline no figure matches any more")
    assert not problems, "\n".join(problems)


def test_every_baseline_belongs_to_a_lesson() -> None:
    stems = {p.stem for p in lessons_with_figures()}
    orphans = [p.name for p in BASELINES.glob("*.png") if p.stem.rsplit("-", 1)[0] not in stems]
    assert not orphans, f"baselines of no lesson with figures: {orphans}"


def test_comparison_catches_a_changed_label(tmp_path: Path) -> None:
    """One character changed in one label of the largest figure fails the comparison."""
    history = [  # one task: two retries 1 s apart, then a dead letter
        Attempt("a", "fetch", n, "w1", n, n, n, "retrying", "ConnectionError", "x", 1.0)
        for n in (1, 2)
    ] + [Attempt("a", "fetch", 3, "w1", 3, 3, 3, "failed", "ConnectionError", "x")]
    paths = []
    with matplotlib.rc_context(RC):
        for name in ("expected.png", "actual.png"):
            fig = plots.dashboard(history)
            [label, *_] = [t for ax in fig.axes for t in ax.texts if t.get_text() == "try 2 +1s"]
            if name == "actual.png":
                label.set_text("try 2 +7s")
            fig.savefig(tmp_path / name)
            plt.close(fig)
            paths.append(str(tmp_path / name))

    assert compare_images(paths[0], paths[0], TOLERANCE) is None
    assert compare_images(paths[0], paths[1], TOLERANCE) is not None

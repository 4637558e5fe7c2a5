"""Every lesson keeps the course's shape, and is committed with its outputs.

nbval checks that a notebook's outputs are reproducible; this checks what a student relies
on: one title, what they will learn, prerequisites, key concepts, exercises, next steps,
a seeded first cell, and outputs saved (nbval compares nothing in a cell saved empty).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
PRACTICE = sorted(NOTEBOOKS.glob("exercises/*.ipynb")) + sorted(NOTEBOOKS.glob("solutions/*.ipynb"))
EXPECTED_LESSONS = [f"{n:02d}" for n in range(1, 18)]
README = NOTEBOOKS.parent / "README.md"


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _markdown(nb: dict) -> str:
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def _code(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _name(path: Path) -> str:
    return str(path.relative_to(NOTEBOOKS))


def test_one_lesson_per_tutorial_section() -> None:
    assert [p.name[:2] for p in LESSONS] == EXPECTED_LESSONS


def test_readme_lists_every_lesson_in_order() -> None:
    """The README's "The lessons" table names each notebook once, in the course's order."""
    section = README.read_text().split("## The lessons", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(\d\d_\w+)` \|", section, re.M)
    assert listed == [p.stem for p in LESSONS]


@pytest.mark.parametrize("path", LESSONS[:-1], ids=_name)
def test_each_lesson_links_to_the_next(path: Path) -> None:
    """A student who finishes a lesson finds the next one under "## Next"."""
    following = LESSONS[LESSONS.index(path) + 1].name
    next_section = _markdown(_load(path)).split("## Next", 1)[1]
    assert f"({following})" in next_section


@pytest.mark.parametrize("path", LESSONS + PRACTICE, ids=_name)
def test_notebook_has_the_course_shape(path: Path) -> None:
    nb = _load(path)
    text = _markdown(nb)
    assert len(re.findall(r"^# ", text, re.M)) == 1, "exactly one H1 title"
    assert re.search(r"^## You will (learn|practise)", text, re.M)
    assert re.search(r"prerequisite", text, re.I)
    assert re.search(r"^## Key concepts", text, re.M)
    assert re.search(r"^## Next", text, re.M)
    if path in LESSONS:
        assert re.search(r"^## Try it yourself", text, re.M)


@pytest.mark.parametrize("path", LESSONS + PRACTICE, ids=_name)
def test_first_code_cell_imports_and_seeds(path: Path) -> None:
    first = "".join(_code(_load(path))[0]["source"])
    assert "import" in first
    assert re.search(r"seed|Random\(", first), "seed the randomness in the first code cell"


@pytest.mark.parametrize("path", LESSONS + PRACTICE, ids=_name)
def test_notebook_is_committed_executed_with_outputs(path: Path) -> None:
    cells = _code(_load(path))
    assert all(c.get("execution_count") for c in cells), "run every cell before committing"
    assert sum(bool(c.get("outputs")) for c in cells) >= len(cells) // 2


@pytest.mark.parametrize("path", LESSONS + PRACTICE, ids=_name)
def test_test_plumbing_is_out_of_sight(path: Path) -> None:
    """nbval's cell tag `nbval-ignore-output` does what a `# NBVAL_IGNORE_OUTPUT` comment
    does, without showing students a line that is not about the lesson."""
    for cell in _code(_load(path)):
        assert "NBVAL" not in "".join(cell["source"]), "use the nbval-ignore-output cell tag"


@pytest.mark.parametrize("path", PRACTICE, ids=_name)
def test_practice_books_are_named_after_their_lesson(path: Path) -> None:
    """exercises/NN_x.ipynb and solutions/NN_x.ipynb need lesson NN: their title says NN,
    and their prerequisites link to it."""
    number = path.name[:2]
    text = _markdown(_load(path))
    assert re.search(rf"^# {number} · ", text, re.M), "the title starts with the lesson's number"
    prerequisites = text.split("**Prerequisites:**", 1)[1].split("\n\n", 1)[0]
    assert f"(../{number}_" in prerequisites, f"the prerequisites link to lesson {number}"


@pytest.mark.parametrize("path", PRACTICE, ids=_name)
def test_checker_feedback_is_the_cells_value(path: Path) -> None:
    """Every checker's verdict shows one way: as the cell's value (its HTML, in colour),
    never through print()."""
    checks = ["".join(c["source"]) for c in _code(_load(path)) if "check_" in "".join(c["source"])]
    assert checks
    for source in checks:
        assert not re.search(r"print\(\s*(await\s+)?[\w.]*check_", source), source


@pytest.mark.parametrize("path", LESSONS + PRACTICE, ids=_name)
def test_links_to_notebooks_resolve(path: Path) -> None:
    """A link to a lesson, an exercise book or a solution leads to a file that exists."""
    for target in re.findall(r"\]\(([^)#\s]+\.ipynb)\)", _markdown(_load(path))):
        assert (path.parent / target).resolve().is_file(), target


#: The longest code cell a lesson may have: a student reads a cell as one step, and a
#: teacher shows it on one screen. Plumbing (printing a history, starting worker processes,
#: draining and timing) lives in sitq.teaching, with docstrings that say why.
MAX_CODE_CELL_LINES = 25


@pytest.mark.parametrize("path", LESSONS, ids=_name)
def test_lesson_code_cells_are_short(path: Path) -> None:
    """No code cell of a lesson (notebooks/NN_*.ipynb) is over MAX_CODE_CELL_LINES lines."""
    for index, cell in enumerate(_load(path)["cells"]):
        if cell["cell_type"] == "code":
            lines = len("".join(cell["source"]).splitlines())
            assert lines <= MAX_CODE_CELL_LINES, f"cell {index} has {lines} lines"


@pytest.mark.parametrize("path", LESSONS, ids=_name)
def test_lesson_ends_with_its_questions_then_next(path: Path) -> None:
    """A lesson ends the same way every time, so a student knows where to check themselves.

    The rule: one markdown cell holds the heading "## Check your understanding"; every cell
    from there to the end is markdown (no code after it), and the only level-2 headings from
    there on are "## Check your understanding" and then "## Next", so these are the lesson's
    last two sections. The questions section asks 3 to 5 questions, bold and numbered from 1
    ("**1. ...**"), each followed by exactly one answer hidden until opened,
    `<details><summary>Answer</summary> ... </details>`. The "## Next" section holds at
    least one link and no further heading (a link's description may follow it).
    """
    cells = _load(path)["cells"]
    starts = [
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "markdown"
        and re.search(r"^## Check your understanding\s*$", "".join(c["source"]), re.M)
    ]
    assert len(starts) == 1, "one '## Check your understanding' section"
    tail = cells[starts[0] :]
    assert all(c["cell_type"] == "markdown" for c in tail), "no code after the questions"
    text = "\n\n".join("".join(c["source"]) for c in tail)
    text = text[text.index("## Check your understanding") :]
    assert re.findall(r"^## (.*?)\s*$", text, re.M) == ["Check your understanding", "Next"]
    questions, next_section = text.split("\n## Next", 1)

    chunks = re.split(r"^\*\*(\d+)\. ", questions, flags=re.M)
    numbers = [int(n) for n in chunks[1::2]]
    assert numbers == list(range(1, len(numbers) + 1)), "questions numbered 1, 2, 3..."
    assert 3 <= len(numbers) <= 5, f"{len(numbers)} questions"
    for number, chunk in zip(numbers, chunks[2::2], strict=True):
        answers = re.findall(r"<details><summary>Answer</summary>(.+?)</details>", chunk, re.S)
        assert len(answers) == 1 and answers[0].strip(), f"question {number}: one hidden answer"

    assert re.search(r"\[[^\]]+\]\([^)]+\)", next_section), "'## Next' links somewhere"
    assert not re.search(r"^#", next_section, re.M), "nothing after '## Next' but links"

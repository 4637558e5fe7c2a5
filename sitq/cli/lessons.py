"""`sitq lessons [DIR]`: copy the lessons, exercises and solutions into a folder of your own.

The notebooks ship inside the package (built from the repository's notebooks/ folder, see
pyproject.toml), so a pip install has them too. A copy is yours to run, edit and break:
the installed originals stay as they were, and a second copy can always be made.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

from sitq.errors import DISTRIBUTION, SitqError

#: What a learner gets, relative to the lessons folder: the lessons, the shop's task modules
#: in shop/ (lessons 14 and 15 start workers in other processes that import them, lesson 13
#: replays lesson 12's traffic from one), the exercises and their solutions. The nbval
#: settings beside them in a checkout are test plumbing, left out.
PATTERNS = ("*.ipynb", "shop/*.py", "exercises/*.ipynb", "solutions/*.ipynb")
DEFAULT_FOLDER = "sitq-lessons"


def lessons_source() -> Path:
    """Where the lessons are: sitq/lessons in an installed wheel, notebooks/ in a checkout
    (an editable install or PYTHONPATH, where the package is the repository's sitq/)."""
    package = Path(__file__).resolve().parent.parent  # sitq/, from sitq/cli/lessons.py
    for folder in (package / "lessons", package.parent / "notebooks"):
        if any(folder.glob("*.ipynb")):
            return folder
    raise SitqError(
        f"no lessons found beside {package} (looked in lessons/ and ../notebooks/): "
        f'reinstall with pip install --force-reinstall "{DISTRIBUTION}"'
    )


def lesson_files(source: Path) -> list[Path]:
    """The files to copy, relative to `source`, in lesson order."""
    return sorted({path.relative_to(source) for p in PATTERNS for path in source.glob(p)})


async def copy_lessons(args: argparse.Namespace) -> int:
    """Copy every lesson file into args.folder; existing files are kept unless --force."""
    source = lessons_source()
    target = Path(args.folder)
    files = lesson_files(source)
    existing = [name for name in files if (target / name).exists()]
    if existing and not args.force:
        shown = ", ".join(str(name) for name in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        print(
            f"sitq: {target} already has {shown}{more}: nothing copied, so your work there "
            "is safe. Choose another folder, or add --force to replace them with fresh copies.",
            file=sys.stderr,
        )
        return 1
    try:
        for name in files:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, target / name)
    except OSError as exc:
        raise SitqError(f"cannot copy the lessons into {target}: {exc}") from exc
    lessons = sum(1 for name in files if name.suffix == ".ipynb" and name.parent == Path())
    print(f"copied {lessons} lessons with their exercises and solutions to {target}/")
    print(f"open them with:  jupyter lab {target}")
    if importlib.util.find_spec("jupyterlab") is None:
        print(f'(JupyterLab is not installed here: pip install "{DISTRIBUTION}[notebook]")')
    return 0


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `sitq lessons [DIR] [--force]` (it needs no database)."""
    text = "copy the lessons, exercises and solutions into a folder to open in JupyterLab"
    lessons = commands.add_parser("lessons", help=text, description=text)
    lessons.add_argument(
        "folder",
        nargs="?",
        default=DEFAULT_FOLDER,
        metavar="DIR",
        help="where to put them; made if missing (default: %(default)s)",
    )
    lessons.add_argument("--force", action="store_true", help="replace lesson files already in DIR")
    lessons.set_defaults(handler=copy_lessons)

"""What a pip install gets: a light core (no plotting stack), the lessons inside the package
(`sitq lessons DIR` copies them out), and one name on the package index, sitq-queue."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import sitq

ROOT = Path(__file__).resolve().parents[1]

#: Run first in a child Python: importing any of these fails, as in a core install.
BLOCK_PLOTTING = textwrap.dedent(
    """
    import sys

    class NoPlotting:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("matplotlib", "numpy", "PIL"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NoPlotting())
    """
)


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", BLOCK_PLOTTING + textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _sitq(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "sitq", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_core_install_has_no_plotting_stack_nor_aiosqlite_and_runs_a_worker_without_them(
    tmp_path: Path,
) -> None:
    core = _pyproject()["project"]["dependencies"]
    assert not [r for r in core if r.startswith(("matplotlib", "numpy", "aiosqlite"))], core
    run = _python(
        """
        import asyncio, sys
        sys.modules["aiosqlite"] = None  # SQLite's thread is sitq's own: importing it fails
        import sitq, sitq.cli
        from sitq import TaskQueue, Worker

        async def main():
            async with TaskQueue("sqlite:///queue.db") as queue:
                task_id = await queue.enqueue(pow, 2, 10)
                await Worker(queue.backend).run_until_idle()
                print((await queue.get_result(task_id, timeout=5)).value)

        asyncio.run(main())
        print(sorted({"matplotlib", "numpy"} & set(sys.modules)))
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1024", "[]"]


def test_plots_without_matplotlib_name_the_extra_to_install(tmp_path: Path) -> None:
    run = _python(
        """
        try:
            import sitq.plots
        except ImportError as exc:
            print(type(exc).__name__, exc)
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("MissingExtraError sitq.plots needs 'matplotlib'")
    assert 'pip install "sitq-queue[plots]"' in run.stdout


def test_the_notebook_extra_brings_the_plots_extra() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    assert "sitq-queue[plots]" in extras["notebook"]
    assert any(r.startswith("matplotlib") for r in extras["plots"])


def test_the_distribution_name_is_sitq_queue_and_the_version_comes_from_sitq() -> None:
    project = _pyproject()["project"]
    assert project["name"] == "sitq-queue"  # "sitq" on the package index is another project
    assert project["dynamic"] == ["version"]
    attr = _pyproject()["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "sitq.__version__" and sitq.__version__


def test_every_package_under_sitq_is_listed_for_the_wheel() -> None:
    """[tool.setuptools] packages is a list (the lessons are mapped in from notebooks/),
    so a new subpackage would be missing from the wheel unless it is added there."""
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in ROOT.glob("sitq/**/__init__.py")
    }
    assert found <= listed, sorted(found - listed)
    assert _pyproject()["tool"]["setuptools"]["package-dir"] == {"sitq.lessons": "notebooks"}


def test_sitq_lessons_copies_lessons_exercises_solutions_and_their_task_modules(
    tmp_path: Path,
) -> None:
    run = _sitq("lessons", "course", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "jupyter lab course" in run.stdout
    copied = {p.relative_to(tmp_path / "course") for p in (tmp_path / "course").rglob("*")}
    assert Path("01_simple_task.ipynb") in copied
    assert Path("exercises/05_retry_strategies.ipynb") in copied
    assert Path("solutions/05_retry_strategies.ipynb") in copied
    assert Path("shop/reliability.py") in copied  # lesson 14's workers import it
    assert Path("shop/__init__.py") in copied  # a package: `--import shop.reliability`
    assert not {Path("conftest.py"), Path(".pytest.ini"), Path(".sanitize.cfg")} & copied
    from sitq.cli.lessons import lesson_files, lessons_source

    source = lessons_source()
    for name in lesson_files(source):
        assert (tmp_path / "course" / name).read_bytes() == (source / name).read_bytes()


def test_sitq_lessons_never_overwrites_a_learners_work_without_force(tmp_path: Path) -> None:
    assert _sitq("lessons", cwd=tmp_path).returncode == 0  # the default folder
    lesson = tmp_path / "sitq-lessons" / "01_simple_task.ipynb"
    lesson.write_text("my notes")
    again = _sitq("lessons", cwd=tmp_path)
    assert again.returncode == 1
    assert "--force" in again.stderr and "nothing copied" in again.stderr
    assert lesson.read_text() == "my notes"
    forced = _sitq("lessons", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert lesson.read_bytes() == (ROOT / "notebooks" / "01_simple_task.ipynb").read_bytes()

"""The website: it builds without a warning, has a page for every lesson, and loads in a
real browser.

`python3 dev.py docs` builds it with MkDocs (mkdocs.yml): the README as the home page, the
lessons exactly as committed (their stored outputs, nothing re-executed), the how-tos and an
API reference generated from the docstrings. `strict: true` in mkdocs.yml turns every
warning (a broken link, a page missing from the nav, a docstring the reference cannot
read) into a failed build, so this test fails on any of them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="the website needs the docs extra: pip install -e '.[docs]'")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built once for this module's tests, into a temp dir."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert not warnings, "\n".join(warnings)
    return out


def lesson_names() -> list[str]:
    """Every committed notebook: lessons, exercises and solutions."""
    return sorted(
        str(path.relative_to(NOTEBOOKS).with_suffix(""))
        for path in NOTEBOOKS.rglob("*.ipynb")
        if ".ipynb_checkpoints" not in path.parts
    )


def test_every_lesson_has_a_page_with_its_committed_outputs(site: Path) -> None:
    names = lesson_names()
    assert len(names) >= 13
    for name in names:
        page = site / "lessons" / name / "index.html"
        assert page.exists(), f"no page for notebooks/{name}.ipynb: add it to mkdocs.yml's nav"
        text = page.read_text()
        assert "Binder</a>" in text and "Colab</a>" in text, f"{name}: no launch links"
    # Outputs come from the committed files, not a new run: lesson 05's figures are there
    # as the PNGs stored in the notebook.
    retries = (site / "lessons" / "05_retries" / "index.html").read_text()
    assert retries.count("data:image/png;base64,") >= 1


def test_the_home_page_is_the_readme_and_the_reference_reads_the_docstrings(site: Path) -> None:
    home = (site / "index.html").read_text()
    assert "a small, real, async task queue" in home
    queue_page = (site / "reference" / "queue" / "index.html").read_text()
    assert "TaskQueue" in queue_page and "enqueue" in queue_page
    for howto in ("workers-as-a-service", "sqlite-to-postgresql", "stuck-task"):
        assert (site / "howto" / howto / "index.html").exists()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no browser: apt-get install -y chromium")
def test_the_site_loads_in_chromium(site: Path) -> None:
    """A lesson page opened in headless Chromium shows its title, code and a figure, and
    the browser reports no page error."""
    sync_api = pytest.importorskip("playwright.sync_api")
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"],
        cwd=site,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N ..."
        port = int(re.search(r"port (\d+)", line).group(1))  # type: ignore[union-attr]
        with sync_api.sync_playwright() as play:
            browser = play.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"http://127.0.0.1:{port}/lessons/05_retries/", wait_until="load")
            assert "Retries" in page.title()
            assert page.locator("img[src^='data:image/png']").count() >= 1
            assert page.get_by_text("Binder").count() >= 1
            page.goto(f"http://127.0.0.1:{port}/reference/queue/", wait_until="load")
            assert page.locator("h2", has_text="TaskQueue").count() >= 1
            browser.close()
        assert not errors, errors
    finally:
        server.terminate()
        server.wait(timeout=10)

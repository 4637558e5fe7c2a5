"""MkDocs hook: pages that are files of the repository, with their links mended.

`docs/index.md` is the README and `docs/changelog.md` the changelog: each holds one line,
`--8<-- "README.md"`, that this hook replaces with the file (so there is one copy to edit).
Those files link to others as GitHub shows them, from the repository's root; on the site the
same files are pages under docs/, so their links are rewritten too, and `strict` link
checking still catches every other broken link.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = re.compile(r'^--8<-- "([^"]+)"$', re.M)
#: Repository paths -> the same file as a page of the site (paths relative to docs/).
SAME_PAGE = {"](docs/migrating.md)": "](migrating.md)", "](CHANGELOG.md)": "](changelog.md)"}


def on_page_markdown(markdown: str, **_: Any) -> str:
    markdown = INCLUDE.sub(lambda m: (ROOT / m.group(1)).read_text(), markdown)
    for repo_link, page_link in SAME_PAGE.items():
        markdown = markdown.replace(repo_link, page_link)
    return markdown

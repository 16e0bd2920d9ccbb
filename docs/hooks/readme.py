"""mkdocs hook: the home page of the site is README.md, with its links rewritten for the site.

README links to docs pages as ``docs/x.md`` (right on GitHub); inside the site those are ``x.md``.
Links to files outside docs/ (scripts, the licence) point at nothing in the site; they become
plain code spans so that ``mkdocs build --strict`` stays meaningful for the real pages.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_for_site(text: str) -> str:
    text = re.sub(r"\]\(docs/", "](", text)
    # other relative links (not http, not #anchor, not a docs page) -> code span of the link text
    return re.sub(r"\[([^\]]+)\]\((?!https?://|#|[\w\-]+\.md)([^)]+)\)", r"`\2`", text)


def on_page_markdown(markdown: str, page, config, files):  # noqa: D103 - mkdocs hook signature
    if page.file.src_uri == "index.md":
        return readme_for_site(README.read_text(encoding="utf-8"))
    return markdown


# --- API reference sources -------------------------------------------------------------------------
# The repository keeps backends/ and analysis/ at the top level and installs them as
# linmultistep.backends / linmultistep.analysis (pyproject package-dir). mkdocstrings reads sources
# statically, so it is given a mirror of the installed layout: real directories holding symlinks
# to the .py files (griffe does not descend into symlinked directories); nothing is copied or imported.
ROOT = README.parent
API_SRC = ROOT / "build" / "docs-api-src"
LAYOUT = {"linmultistep": "linmultistep", "linmultistep/backends": "backends", "linmultistep/analysis": "analysis"}


def make_api_source_tree(root: Path = ROOT, target: Path = API_SRC) -> Path:
    """Rebuild target/linmultistep/... from the package-dir mapping (idempotent)."""
    import shutil

    if target.exists():
        shutil.rmtree(target)
    for dest, src in LAYOUT.items():
        for py in (root / src).rglob("*.py"):
            rel = py.relative_to(root / src)
            if "__pycache__" in rel.parts:
                continue
            link = target / dest / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(py.resolve())
    return target


try:  # run before mkdocstrings' own on_config, which resolves its source paths once
    from mkdocs.plugins import event_priority
except ImportError:  # pragma: no cover - older mkdocs
    def event_priority(_priority):
        return lambda f: f


@event_priority(100)
def on_config(config):  # noqa: D103 - mkdocs hook signature
    make_api_source_tree()
    return config

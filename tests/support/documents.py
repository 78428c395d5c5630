"""The pages whose code the tests run: the README and every page of the documentation site."""

from __future__ import annotations

import re
from pathlib import Path

from .servers import ROOT

#: The README (the site's front page) first, then docs/**/*.md in path order (not the build).
DOCUMENTS: list[Path] = [
    ROOT / "README.md",
    *sorted(path for path in (ROOT / "docs").rglob("*.md") if "_build" not in path.parts),
]


def name(document: Path) -> str:
    """The document's path from the checkout's root, as tests name it."""
    return document.relative_to(ROOT).as_posix()


def blocks(document: Path, language: str) -> list[str]:
    """The contents of the document's fenced code blocks in ``language`` (```` ```python ````), in order."""
    return re.findall(rf"```{language}\n(.*?)```", document.read_text(), flags=re.DOTALL)

"""Sphinx configuration: the documentation site, built with ``nox -s docs`` (warnings fail it)."""

from __future__ import annotations

import re
import sys
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.ext.napoleon.docstring import GoogleDocstring

import eventstream

project = "eventstream"
author = "The eventstream developers"
copyright = "The eventstream developers"
release = eventstream.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# MyST: anchors for headings down to ###, so [text](page.md#a-heading) links resolve.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# autodoc: members in source order, signatures with their annotations (no network,
# so no intersphinx: names of other libraries stay plain text).
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# References to other libraries' types (anyio, httpx, the standard library) have no
# inventory to resolve against without intersphinx; they stay as text, unresolved.
nitpicky = False

html_theme = "furo"
html_title = f"eventstream {release}"


def _prose_attribute_docstring(self: GoogleDocstring) -> list[str]:
    """An attribute's or property's docstring is prose, sections included.

    Napoleon reads the first line of such a docstring as ``type: description``;
    the library's docstrings use a colon in prose ("The engine's epoch: the
    prefix of the ids it assigns") and annotate their types, so they are read
    as prose, with their ``Raises:`` sections.
    """
    return type(self)(self._consume_to_end(), self._config).lines()


GoogleDocstring._parse_attribute_docstring = _prose_attribute_docstring  # type: ignore[method-assign]


def _public_bases(app: Sphinx, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    """Bases shown are public ones: not ``object``, not the library's private classes."""
    bases[:] = [base for base in bases if _is_public(base)]


def _is_public(base: Any) -> bool:
    module = getattr(base, "__module__", "")
    if base is object:
        return False
    return not module.startswith("eventstream._") or getattr(base, "__name__", "") in eventstream.__all__


_DOTTED = re.compile(r"\beventstream(?:\.\w+)+")


def _public_path(match: re.Match[str]) -> str:
    """``eventstream._redis.broker.RedisBroker`` as ``eventstream.RedisBroker``: the module part
    of a path (the longest prefix that is a module) dropped when it is private (``eventstream.client``
    for ``eventstream._client``)."""
    parts = match.group(0).split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in sys.modules:
            module, qualname = parts[:end], parts[end:]
            break
    if qualname and any(part.startswith("_") for part in module):
        # The client's classes are public in eventstream.client (defined in eventstream._client).
        public = "eventstream.client" if module[:2] == ["eventstream", "_client"] else "eventstream"
        return ".".join([public, *qualname])
    return match.group(0)


def _public_paths(app: Sphinx, doctree: nodes.document) -> None:
    """Names shown with their public path: ``eventstream.ServerSentEvent``, not ``eventstream._sse...``.

    Every public name is re-exported by ``eventstream``; type aliases and
    annotations would otherwise show the private module that defines them.
    """
    for text in list(doctree.findall(nodes.Text)):
        public = _DOTTED.sub(_public_path, text)
        if public != text:
            text.parent.replace(text, nodes.Text(public))
    # A class whose bases were all left out (see _public_bases) gets no "Bases:" line.
    for paragraph in list(doctree.findall(nodes.paragraph)):
        if paragraph.astext().strip() == "Bases:":
            paragraph.parent.remove(paragraph)


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("doctree-read", _public_paths)

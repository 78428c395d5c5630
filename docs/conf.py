"""Sphinx configuration: the documentation site, built with ``nox -s docs`` (warnings fail it)."""

from __future__ import annotations

import eventstream

project = "eventstream"
author = "The eventstream developers"
copyright = "The eventstream developers"  # noqa: A001
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

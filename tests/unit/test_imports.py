"""The library's modules form no import circle: no two of them import each other.

Imports made for type checking only count too: a module that needs another's
types, while that one imports it, takes a protocol of what it uses instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import eventstream

from ..support.helpers import run_python

PACKAGE = Path(eventstream.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The library's modules (and names in them) that ``path`` imports, made absolute."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "eventstream"}


def test_no_two_modules_import_each_other() -> None:
    imports = {_module_name(path): _imports(path) for path in PACKAGE.rglob("*.py")}
    circles = sorted(
        (a, b)
        for a, names in imports.items()
        for b in names
        if a < b
        and b in imports
        and a in imports[b]
        # (a package and its own modules: the package's __init__ gathers them)
        and not b.startswith(f"{a}.")
        and not a.startswith(f"{b}.")
    )
    assert circles == []


def test_the_check_sees_a_relative_import_of_a_sibling() -> None:
    # The check above would pass vacuously if it resolved no relative import.
    waiter = PACKAGE / "_backends" / "_waiter.py"
    assert "eventstream._backends._interfaces.Waiter" in _imports(waiter)


def test_an_app_that_uses_no_grip_nor_tokens_loads_neither_httpx_nor_jwt_nor_cryptography() -> None:
    # What an app imports stays in its process, and every full garbage collection walks
    # it: GRIP's HTTP client and keys, and the tokens' (about 22,000 objects with what
    # httpx brings) load when first used, not with the library nor with eventstream.auth.
    code = (
        "import sys, eventstream\n"
        "from eventstream.auth import Grant, TokenVerifier\n"
        "heavy = ('httpx', 'jwt', 'cryptography')\n"
        "stream = eventstream.EventStream(authorize=lambda scope, channels: Grant(identity='me'))\n"
        "assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]\n"
        "from eventstream._grip._config import proxies_from_config\n"
        "[proxy] = proxies_from_config(eventstream.parse_grip_uri('http://127.0.0.1:5561?iss=me&key=k'))\n"
        "assert proxy.auth_headers()['Authorization'].startswith('Bearer ey')\n"
        "assert 'jwt' in sys.modules\n"
        "verifier = TokenVerifier(secret='s' * 32, algorithms=['HS256'], required=())\n"
        "import jwt\n"
        "assert verifier.verify(jwt.encode({'sub': 'me'}, 's' * 32, algorithm='HS256'))['sub'] == 'me'\n"
    )
    run_python(code)

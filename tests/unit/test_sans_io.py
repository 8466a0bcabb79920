"""The core stays sans-IO and at the bottom of the layers.

Rule: every module in ``udpkit.core`` imports only the standard library
(minus I/O and the clock: no socket, asyncio, time, select, selectors,
threading, ssl) and ``udpkit.core`` itself.  The built-in apps import only
the same standard library, ``udpkit.core`` and ``udpkit.apps``.  Dependencies
point down; a regression here would mean logic that tests can no longer drive
by hand, or a core that needs the layers built on it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import udpkit.apps
import udpkit.core

CORE = Path(udpkit.core.__file__).parent
APPS = Path(udpkit.apps.__file__).parent
SRC = CORE.parent.parent
FORBIDDEN = {"socket", "asyncio", "time", "select", "selectors", "threading", "ssl"}


def imported_modules(source: str, package: str) -> set[str]:
    """Every module ``source`` imports, by absolute name, type-only imports included.

    ``package`` is the package the module lives in (relative imports resolve
    against it); ``from udpkit import core`` counts as ``udpkit.core``.
    """
    here = package.split(".")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if module == "udpkit" or not node.module:
                imported.update(f"{module}.{alias.name}" for alias in node.names)
            else:
                imported.add(module)
    return imported


def violations(source: str, package: str, allowed: tuple[str, ...]) -> list[str]:
    """The imports of ``source`` that are neither I/O-free standard library nor
    inside one of the ``allowed`` packages."""
    bad = []
    for name in sorted(imported_modules(source, package)):
        if any(name == allow or name.startswith(allow + ".") for allow in allowed):
            continue
        top = name.split(".")[0]
        if top in sys.stdlib_module_names and top not in FORBIDDEN:
            continue
        bad.append(name)
    return bad


def package_of(path: Path) -> str:
    return ".".join(path.parent.relative_to(SRC).parts)


@pytest.mark.parametrize("module", sorted(CORE.rglob("*.py")), ids=lambda path: path.name)
def test_core_imports_only_the_standard_library_and_core(module: Path) -> None:
    """Regression: core/matching.py and core/payloads.py imported
    udpkit.apps.greeting, core depending on the apps built on it.  The guard
    then checked only top-level names against socket/asyncio/time/..., so it
    passed; this check failed on both modules until the app registry handed
    the reply rule in."""
    assert violations(module.read_text(), package_of(module), ("udpkit.core",)) == []


OPTIONAL_EXTRAS = {"dns_zone.py": ("dns",)}
"""An app's module that may use the app's optional extra (dnspython for ``dns``),
imported inside the functions that need it, so that importing udpkit does not."""


@pytest.mark.parametrize("module", sorted(APPS.rglob("*.py")), ids=lambda path: path.name)
def test_apps_import_only_the_standard_library_core_and_apps(module: Path) -> None:
    allowed = ("udpkit.core", "udpkit.apps", *OPTIONAL_EXTRAS.get(module.name, ()))
    assert violations(module.read_text(), package_of(module), allowed) == []


def test_importing_udpkit_and_its_apps_does_not_import_an_optional_extra() -> None:
    """dnspython serves ``udpkit serve dns`` only: the library path must not need it."""
    code = ("import sys, udpkit, udpkit.apps, udpkit.apps.dns, udpkit.cli\n"
            "print(sorted(m for m in sys.modules if m == 'dns' or m.startswith('dns.')))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, timeout=30).stdout.strip()
    assert found == "[]"


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import socket", ["socket"]),
        ("import time as clock", ["time"]),
        ("from asyncio import Event", ["asyncio"]),
        ("import xml.etree, socket", ["socket"]),
        ("from udpkit.apps.greeting import greet", ["udpkit.apps.greeting"]),
        ("from udpkit import apps, core", ["udpkit.apps"]),
        ("import udpkit.server", ["udpkit.server"]),
        ("from .. import server", ["udpkit.server"]),
        ("from ..client import aio", ["udpkit.client"]),
        ("import click", ["click"]),
        ("if TYPE_CHECKING:\n    from udpkit.server.config import ServerConfig",
         ["udpkit.server.config"]),
        ("import re, collections.abc\nfrom udpkit.core.errors import UsageError\n"
         "from . import framing\nfrom .handler import Peer\nfrom udpkit import core", []),
    ],
)
def test_the_guard_finds_every_spelling_of_an_upward_or_io_import(
    source: str, found: list[str]
) -> None:
    assert violations(source, "udpkit.core", ("udpkit.core",)) == found


def test_the_guard_would_have_caught_core_importing_an_app() -> None:
    """What core/matching.py and core/payloads.py said before the registry."""
    before = "from udpkit.apps.greeting import greet\nfrom udpkit.core.errors import UsageError\n"
    assert violations(before, "udpkit.core", ("udpkit.core",)) == ["udpkit.apps.greeting"]

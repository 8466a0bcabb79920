"""The core stays sans-IO: no module in udpkit.core imports I/O or the clock.

A regression here would mean logic that tests can no longer drive by hand.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import udpkit.core

CORE = Path(udpkit.core.__file__).parent
FORBIDDEN = {"socket", "asyncio", "time", "select", "selectors", "threading", "ssl"}


@pytest.mark.parametrize("module", sorted(CORE.glob("*.py")), ids=lambda path: path.name)
def test_core_module_imports_no_io(module: Path) -> None:
    tree = ast.parse(module.read_text(), filename=str(module))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{module.name} imports {sorted(imported & FORBIDDEN)}"

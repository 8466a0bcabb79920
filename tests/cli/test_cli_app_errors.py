"""Tier (d): every way a user's app can fail to load is one line and exit 2.

``udpkit serve APP`` with a missing module, a syntax error, an exception at
import, a missing attribute or something not callable prints
``udpkit serve: <what> (<hint>)`` on stderr, nothing else, and exits 2, with
or without ``--workers``.
"""

from __future__ import annotations

import pathlib

import pytest

from tests.processes import run_udpkit

MODULES = {
    "badsyntax": "def handler(request, peer)\n    return request\n",
    "raises_at_import": "import json\nraise RuntimeError('no database configured')\n",
    "plain": "handler = 42\n",
}

CASES = [
    ("no_such_module_xyz:app", "cannot import module 'no_such_module_xyz'", "--app-dir"),
    ("badsyntax:handler", "cannot import module 'badsyntax': syntax error in", "fix the module"),
    ("raises_at_import:handler",
     "cannot import module 'raises_at_import': it raised RuntimeError: no database configured",
     "shows the traceback"),
    ("plain:missing", "module 'plain' has no attribute 'missing'", "check the name"),
    ("plain:handler", "'plain:handler' is not callable", "handler(request, peer)"),
    ("no_such_builtin", "app 'no_such_builtin' is not built in", "greeting, echo"),
]


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    directory = tmp_path_factory.mktemp("apps")
    for name, source in MODULES.items():
        (directory / f"{name}.py").write_text(source)
    return directory


@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["one-process", "workers-2"])
@pytest.mark.parametrize(("spec", "what", "hint"), CASES, ids=[case[0] for case in CASES])
def test_an_app_that_cannot_load_is_one_line_and_exit_two(
    app_dir: pathlib.Path, spec: str, what: str, hint: str, workers: tuple[str, ...]
) -> None:
    """Regression: a syntax error or an exception raised while importing the app
    printed a ~40-line traceback and exited 1 (only ImportError was caught), with
    or without --workers; a missing module or attribute printed click's
    multi-line usage block."""
    result = run_udpkit("serve", spec, "--port", "0", "--app-dir", str(app_dir), *workers)
    err = result.stderr.decode()
    assert "Traceback" not in err
    assert result.returncode == 2, err
    assert err.count("\n") == 1, err
    assert err.startswith(f"udpkit serve: {what}"), err
    assert hint in err.rsplit(" (", 1)[1], err
    assert err.rstrip("\n").endswith(")"), err

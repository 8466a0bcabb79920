"""The package as a user installs it: metadata, one version, a license (issue 12)."""

from __future__ import annotations

import importlib.metadata
import pathlib
import re
import tomllib

import udpkit
from tests.processes import run_udpkit

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_version_is_written_once() -> None:
    """Regression: the version was written in pyproject.toml and in __init__.py."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    assert importlib.metadata.version("udpkit") == udpkit.__version__
    hits = [path for path in ROOT.joinpath("src").rglob("*.py")
            if re.search(r"^__version__ = ", path.read_text(), re.M)]
    assert hits == [ROOT / "src" / "udpkit" / "__init__.py"]


def test_license_changelog_urls_and_classifiers() -> None:
    """Regression: no LICENSE although pyproject said MIT, no CHANGELOG, no URLs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
    assert {"Homepage", "Repository", "Issues", "Changelog"} <= set(project["urls"])
    assert "Typing :: Typed" in project["classifiers"]
    assert any(c.startswith("Development Status") for c in project["classifiers"])


def test_version_says_whether_the_extension_is_built() -> None:
    result = run_udpkit("--version")
    assert result.returncode == 0
    assert re.match(rb"udpkit, version \S+ \(C extension: (built|not built: pure Python)\)\n$",
                    result.stdout)


def test_the_readme_has_an_install_section() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "## Install" in readme
    assert "pip install ." in readme
    assert "pip install 'udpkit[fast]'" in readme


def test_make_demo_starts_with_what_it_shows_not_a_fast_path_notice() -> None:
    """Regression: the first server line a newcomer read in ``make demo`` was
    "TCP fast path unavailable (access log on)"."""
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")],
                            capture_output=True, timeout=60, check=False,
                            env={**os.environ, "UDPKIT_DEMO_PORT": "0"})
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert out.startswith("udpkit demo: ")
    assert "fast path" not in out
    assert out.count("Hello, Michael!") == 2
    assert "Summary: UDP received=3 replied=3" in out

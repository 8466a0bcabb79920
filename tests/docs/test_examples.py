"""Tier docs: every example in README.md and docs/*.md runs, and shows what it prints.

One test per fenced block, named after its file and line
(``test_example[README.md:23]``).  The rules a block follows are in
:mod:`tests.docs.markdown`; how a shell example is run (ports, background
servers, time bounds) in :mod:`tests.docs.shell`.  A block marked
``<!-- not executed: REASON -->`` is reported as skipped with that reason, so
``pytest -m docs -ra`` lists everything that did not run and why.

The examples share one greeting server (``udpkit serve --port 0``), which
stands for the documents' 127.0.0.1:9999 wherever a block does not start its
own; they only send it well-formed requests, so they cannot disturb each
other's output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.markdown import EXECUTED, NOT_EXECUTED, Block, blocks
from tests.docs.shell import BIN, Session, users_environment

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [block for document in DOCUMENTS for block in blocks(document)]

#: What the README's pytest example needs from the user's own conftest.py.
USER_CONFTEST = '''
import os

import pytest


@pytest.fixture
def my_service_address():
    return ("127.0.0.1", int(os.environ["DOCS_SERVER_PORT"]))
'''


@pytest.fixture(scope="module")
def shared_port() -> Iterator[int]:
    """One greeting server for every example that talks to 127.0.0.1:9999."""
    process = subprocess.Popen(
        [str(BIN / "udpkit"), "serve", "--port", "0"], stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env=users_environment(),
    )
    assert process.stderr is not None
    port = None
    for line in process.stderr:
        bound = re.search(r"Bind TCP on 127\.0\.0\.1:(\d+)", line)
        if bound:
            port = int(bound[1])
            break
    assert port is not None, "the shared server did not start"
    try:
        yield port
    finally:
        process.send_signal(2)
        process.communicate(timeout=15)


@pytest.fixture(scope="module")
def workdirs() -> dict[Path, Path]:
    """Each document's working directory (see :func:`workdir_for`)."""
    return {}


def workdir_for(block: Block, workdirs: dict[Path, Path],
                factory: pytest.TempPathFactory) -> Path:
    """The document's working directory, holding the files its examples define."""
    if block.path not in workdirs:
        directory = factory.mktemp(block.path.stem)
        for other in blocks(block.path):
            if other.file_name is not None and other.reason_not_executed is None:
                (directory / other.file_name).write_text(other.text)
        workdirs[block.path] = directory
    return workdirs[block.path]


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_example(block: Block, shared_port: int, workdirs: dict[Path, Path],
                 tmp_path_factory: pytest.TempPathFactory) -> None:
    reason = block.reason_not_executed
    if reason is not None:
        pytest.skip(f"{block.name}: {reason}")
    if block.language not in EXECUTED and block.file_name is not None:  # a data file
        workdir = workdir_for(block, workdirs, tmp_path_factory)
        assert (workdir / block.file_name).read_text() == block.text
        return
    assert block.language in EXECUTED, (
        f"{block.name}: a ```{block.language or '(no language)'} block would not run: write it "
        f"as one of {EXECUTED}, or give its language, or say why not on the line before: "
        f"<!-- {NOT_EXECUTED} why -->"
    )
    workdir = workdir_for(block, workdirs, tmp_path_factory)
    if block.language in ("console", "sh"):
        Session(block, workdir, shared_port).run()
    elif block.language == "pycon":
        run_python(block, workdir, shared_port, ["-m", "doctest", "-o", "ELLIPSIS"], ".txt")
    elif block.file_name is not None:
        run_python(block, workdir, shared_port, [], ".py", name=block.file_name)
    elif re.search(r"^def test_", block.text, re.MULTILINE):
        (workdir / "conftest.py").write_text(USER_CONFTEST)
        result = run_python(block, workdir, shared_port,
                            ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:asyncio",
                             "-W", "error"], ".py",
                            name=f"test_{block.path.stem.lower()}_{block.line}.py")
        assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout
    else:
        run_python(block, workdir, shared_port, [], ".py")


def run_python(block: Block, workdir: Path, shared_port: int, args: list[str], suffix: str,
               name: str | None = None) -> subprocess.CompletedProcess[str]:
    """Write the block (9999 meaning the shared server) to a file in ``workdir`` and
    run it with this Python; it must exit 0."""
    path = workdir / (name or f"example_{block.path.stem.lower()}_{block.line}{suffix}")
    path.write_text(re.sub(r"\b9999\b", str(shared_port), block.text))
    result = subprocess.run(
        [sys.executable, *args, path.name], cwd=workdir, capture_output=True, text=True,
        timeout=45, check=False,
        env={**users_environment(), "DOCS_SERVER_PORT": str(shared_port),
             "PYTHONPATH": str(workdir)},
    )
    assert result.returncode == 0, f"{block.name} failed:\n{result.stdout}\n{result.stderr}"
    return result

"""The examples of a Markdown file, and how shown output is compared with real output.

Pure: text in, examples and verdicts out.  Rule kept here: every fenced block
of README.md and docs/*.md is either executed or says why not, in the
Markdown itself, on the line before the block:

* ```` ```console ````: a terminal session.  ``$ `` starts a command
  (``\\`` continues it), the lines up to the next command are its output,
  compared after :func:`normalise`; a command shown without output is checked
  for its exit status only.  ``...`` alone on a line stands for any lines,
  ``...`` inside a line for any text.  ``^C`` is Ctrl-C to the last
  long-running command (``udpkit serve``, ``udpkit proxy``, ``... &``); the lines
  after it are the rest of that command's output.
* ```` ```sh ````: commands, one a line, output not shown.
* ```` ```python ````: a script, run on its own; a first line ``# NAME.py``
  makes it a file of that name that the document's other examples use; one
  that defines ``test_`` functions is run by pytest.
* ```` ```pycon ````: a Python session, run by :mod:`doctest`.
* ```` ```dns-zone ```` whose first line is ``; NAME.zone``: a zone file of that
  name that the document's other examples use (written, not run).
* Any block after ``<!-- not executed: REASON -->`` is not run, and the test
  report says so with the reason.  A block in a language that is not shell or
  Python (``nginx``, ``ini``, ``yaml``, ``text``) is not run either, reported
  as "not executed: a ```yaml block".  A block without a language, or in
  another name for shell or Python (``bash``, ``py``...), is an error: say
  which it is.
* ``<!-- numbers vary -->`` before a console block: every number in its output
  is compared as "a number" (an audit's rates differ from run to run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

EXECUTED = ("console", "sh", "python", "pycon")
#: Shell or Python under another name: written so, an example would not run.
OTHER_NAMES = ("bash", "shell", "zsh", "shell-session", "shellsession", "sh-session", "py",
               "python3", "ipython", "py3", "doctest")
NOT_EXECUTED = "not executed:"
NUMBERS_VARY = "numbers vary"

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<language>[\w+-]*)")
_DIRECTIVE = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text, the directive before it."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    directive: str | None = None

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def reason_not_executed(self) -> str | None:
        """Why the block is not run, or None when it is (or must be)."""
        if self.directive is not None and self.directive.startswith(NOT_EXECUTED):
            return self.directive
        if self.file_name is not None:
            return None
        if self.language and self.language not in EXECUTED + OTHER_NAMES:
            return f"{NOT_EXECUTED} a ```{self.language} block"
        return None

    @property
    def file_name(self) -> str | None:
        """``NAME.py`` for a Python block that is a file the other examples use, and
        ``NAME.zone`` for such a zone file."""
        first = self.text.splitlines()[0] if self.text else ""
        if self.language == "dns-zone":
            match = re.fullmatch(r";\s*([\w.-]+\.zone)\s*", first)
            return match.group(1) if match else None
        match = re.fullmatch(r"#\s*([\w.-]+\.py)\s*", first)
        return match.group(1) if self.language == "python" and match else None


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of the Markdown file at ``path``, in order."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = [line[indent:] if not line[:indent].strip() else line.lstrip()
                for line in lines[index + 1:end]]
        found.append(Block(path, index + 1, opening["language"], "\n".join(body) + "\n",
                           _directive_before(lines, index)))
        index = end + 1
    return found


def _directive_before(lines: list[str], index: int) -> str | None:
    previous = index - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    match = _DIRECTIVE.match(lines[previous]) if previous >= 0 else None
    return match["text"] if match else None


# -- console sessions ------------------------------------------------------------


@dataclass
class Command:
    """A command of a console block (or ``^C``) and the output the block shows for it."""

    text: str  # "^C" for Ctrl-C
    line: int  # in the Markdown file
    shown: list[str] = field(default_factory=list)

    @property
    def interrupt(self) -> bool:
        return self.text == "^C"


def commands(block: Block) -> list[Command]:
    """The commands of a ``console`` or ``sh`` block with the output shown for each."""
    found: list[Command] = []
    lines = block.text.splitlines()
    index = 0
    while index < len(lines):
        line, number = lines[index], block.line + 1 + index
        index += 1
        prompt = block.language == "sh" or line.startswith("$ ")
        if block.language == "console" and line.startswith("^C"):
            found.append(Command("^C", number))
            rest = line[2:].split("#")[0].strip()
            if rest:
                found[-1].shown.append(rest)
            continue
        if not prompt:
            if found:
                found[-1].shown.append(line)
            elif line.strip():
                raise ValueError(f"{block.path.name}:{number}: output before any command")
            continue
        text = line[2:] if block.language == "console" else line
        while text.endswith("\\") and index < len(lines):
            text = text[:-1].rstrip() + " " + lines[index].strip()
            index += 1
        if text.strip() and not text.lstrip().startswith("#"):
            found.append(Command(text.strip(), number))
    for command in found:
        while command.shown and not command.shown[-1].strip():
            command.shown.pop()
    return found


# -- comparing output --------------------------------------------------------------

_TIME = re.compile(
    r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?"
)
_PIDS = re.compile(r"\b(pids?)((?: \d+)+)")
_MEASURED = re.compile(
    r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?=\s?(?:ms|us|µs|s|/s|%|x|req/s|replies/s)(?!\w))"
)
_DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+")
_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")


def normalise(text: str, *, numbers_vary: bool = False) -> str:
    """What is compared: times, pids, measured values (decimals, anything in a
    unit of time, rate or ratio) become placeholders, runs of blanks one space.

    Ports are not touched here: the runner maps the ports it chose back to the
    ones the document shows before comparing.
    """
    text = _TIME.sub("<time>", text)
    text = _PIDS.sub(lambda match: f"{match[1]} <pids>", text)
    if numbers_vary:
        text = _NUMBER.sub("<n>", text)
    else:
        text = _MEASURED.sub("<n>", text)
        text = _DECIMAL.sub("<n>", text)
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def matches(shown: list[str], actual: str, *, numbers_vary: bool = False) -> bool:
    """Whether ``actual`` output is what ``shown`` shows (see the module's rules)."""
    pattern = []
    for line in normalise("\n".join(shown), numbers_vary=numbers_vary).splitlines():
        if line == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            pattern.append(".*".join(re.escape(part) for part in line.split("...")) + r"\n")
    text = normalise(actual, numbers_vary=numbers_vary).rstrip("\n")
    text = "\n".join(line for line in text.splitlines()) + "\n" if text else ""
    return re.fullmatch("".join(pattern), text) is not None

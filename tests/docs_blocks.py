"""The docs' code blocks, read from the Markdown sources, and a runner for the ones marked runnable.

The convention (docs/writing-docs.md): an HTML comment on the line before a fenced block marks it.

- `<!-- run -->` runs the block; `<!-- run: ARGS -->` appends ARGS (tiny sizes) to every command in it.
  A `bash` block is a list of `testbed ...` / `python -m testbed ...` commands (`\\` continues a line, `&&` chains,
  `> FILE` writes stdout to FILE, a `*` argument is a glob). A `python` or `yaml` block whose first line is
  `# NAME.py` / `# NAME.yaml` is written to NAME; any other `python` block is executed.
- `<!-- output -->` (or `<!-- output: ARGS -->`) before a block whose first line is `$ COMMAND` runs COMMAND and
  compares what it prints with the rest of the block: numbers and runs of spaces are not compared (timings and
  float rounding change), a line `...` stands for any lines, and a `> FILE` redirection is dropped.

The blocks of one page run in order in one folder (a fresh temporary one, with the repository's `configs/`), so a
file written by one block is there for the next and runs accumulate as they would for a reader.
"""

import contextlib
import glob
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import patch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKER = re.compile(r"^<!--\s*(run|output)(?::(.*?))?\s*-->$")
FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
FILE_LINE = re.compile(r"^#\s*([\w./-]+\.(?:py|yaml|yml))\s*$")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:e[+-]?\d+)?")


@dataclass
class Block:
    """One fenced code block of a page: where it starts, its language, its text and its marker (if any)."""

    page: str
    line: int
    lang: str
    text: str
    kind: str | None = None  # "run", "output" or None
    args: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    """Every fenced block of `page` (a path relative to the repository, e.g. `docs/plugging-in.md`)."""
    lines = (ROOT / page).read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(fence.group(1)))
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        found.append(Block(page, i + 1, fence.group(2), "\n".join(lines[i + 1:end]) + "\n",
                           marker.group(1) if marker else None, shlex.split(marker.group(2) or "") if marker else []))
        i = end + 1
    return found


def marked_pages() -> list[str]:
    """The README and every docs page with at least one marked block."""
    pages = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md"))]
    return [p for p in pages if any(b.kind for b in blocks(p))]


def python_block(page: str, name: str) -> Block:
    """The one Python block of `page` that defines `class NAME` or `def NAME`."""
    pattern = re.compile(rf"^(class|def) {re.escape(name)}\b", re.M)
    hits = [b for b in blocks(page) if b.lang == "python" and pattern.search(b.text)]
    assert len(hits) == 1, f"{page}: {len(hits)} Python blocks define {name}"
    return hits[0]


def define(page: str, name: str, namespace: dict) -> object:
    """Execute the block of `page` that defines `name` in `namespace` (a test module's globals) and return `name`:
    the test's class is then the page's text itself, and `--data=test_module.NAME` finds it. A traceback points at
    the page's own lines."""
    block = python_block(page, name)
    exec(compile("\n" * block.line + block.text, str(ROOT / page), "exec"), namespace)
    return namespace[name]


def commands(text: str) -> list[list[str]]:
    """The commands of a shell block, each as its arguments (comments, continuations and `&&` handled)."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            found.append(words[:cut])
            words = words[cut + 1:]
    return found


def testbed_args(words: list[str], where: str) -> list[str]:
    """The arguments after `testbed` or `python -m testbed`; anything else is not a command the docs run."""
    if words[:1] == ["testbed"]:
        return words[1:]
    if words[:3] == ["python", "-m", "testbed"]:
        return words[3:]
    raise AssertionError(f"{where}: only `testbed` commands run, not {shlex.join(words)!r}")


def run_testbed(args: list[str], where: str, check: bool = True) -> None:
    """`testbed ARGS` in this process (as `tests/conftest.py`'s run_cli), failing on a non-zero exit status if
    `check` (an output block may show an error)."""
    from testbed.cli.main import main

    out = None
    if ">" in args:
        cut = args.index(">")
        out, args = args[cut + 1], args[:cut] + args[cut + 2:]
    expanded = []
    for arg in args:
        matches = sorted(glob.glob(arg)) if "*" in arg else [arg]
        assert matches, f"{where}: {arg} matches no file"
        expanded += matches
    with contextlib.ExitStack() as stack, patch.object(sys, "argv", ["testbed"]):
        if out:
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(out, "w"))))
        try:
            main(expanded)
        except SystemExit as exit_:
            command = shlex.join(expanded)
            assert not check or exit_.code in (0, None), f"{where}: `testbed {command}` exited with {exit_.code}"


def normalise(line: str) -> str:
    return " ".join(NUMBER.sub("#", line).split())


def same_output(expected: list[str], printed: list[str]) -> bool:
    """Whether `printed` matches `expected` line by line, numbers and spacing aside, `...` matching any lines."""
    if not expected:
        return not printed
    if expected[0] == "...":
        return any(same_output(expected[1:], printed[i:]) for i in range(len(printed) + 1))
    return bool(printed) and normalise(expected[0]) == normalise(printed[0]) and same_output(expected[1:], printed[1:])


def write_file(block: Block, name: str) -> None:
    Path(name).parent.mkdir(parents=True, exist_ok=True)
    Path(name).write_text(block.text)
    module = name.removesuffix(".py").replace("/", ".")
    sys.modules.pop(module, None)  # a later block may write the same module anew


def run_block(block: Block, capfd) -> None:
    """Run one marked block in the current folder."""
    first = block.text.splitlines()[0] if block.text.strip() else ""
    if block.kind == "output":
        assert first.startswith("$ "), f"{block.where}: an output block starts with `$ COMMAND`"
        words = commands(first[2:])[0]
        if ">" in words:
            cut = words.index(">")
            words = words[:cut] + words[cut + 2:]
        capfd.readouterr()
        run_testbed(testbed_args(words, block.where) + block.args, block.where, check=False)
        captured = capfd.readouterr()
        printed = (captured.out + captured.err).strip().splitlines()
        expected = block.text.strip().splitlines()[1:]
        assert same_output(expected, printed), (f"{block.where}: `{first[2:]}` printed\n" + "\n".join(printed))
    elif block.lang in ("python", "yaml", "yml") and FILE_LINE.match(first):
        write_file(block, FILE_LINE.match(first).group(1))
    elif block.lang == "python":
        exec(compile(block.text, block.where, "exec"), {"__name__": "__docs__"})
    elif block.lang in ("bash", "sh", "shell"):
        for words in commands(block.text):
            run_testbed(testbed_args(words, block.where) + block.args, block.where)
    else:
        raise AssertionError(f"{block.where}: a marked block is bash, python or yaml, not {block.lang!r}")


def run_page(page: str, folder: Path, capfd) -> None:
    """Run every marked block of `page`, in order, in `folder` (the current directory meanwhile)."""
    (folder / "configs").symlink_to(ROOT / "configs")
    here, path = os.getcwd(), list(sys.path)
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    try:
        for block in blocks(page):
            if block.kind:
                run_block(block, capfd)
    finally:
        os.chdir(here)
        sys.path[:] = path
        for name in [n for n, m in sys.modules.items() if str(getattr(m, "__file__", "")).startswith(str(folder))]:
            del sys.modules[name]  # the page's modules (its my_envs.py) are not importable after it


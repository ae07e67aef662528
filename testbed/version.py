"""Which code made a run: the testbed version and, in a git checkout, the commit (`+dirty` with uncommitted
changes). A run's id hashes its config, not the code, so run.json records this and `report` warns when the runs
of one sweep come from different code."""

import functools
import subprocess
from pathlib import Path

from testbed import __version__


@functools.cache
def code_version() -> str:
    """`0.1.0` outside a git checkout, else e.g. `0.1.0 git:f799f7e` or `0.1.0 git:f799f7e+dirty`."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit is None:
        return __version__
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return f"{__version__} git:{commit}" + ("+dirty" if dirty else "")

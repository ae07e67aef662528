"""A griffe extension that lays out `testbed` as it is installed, for the API reference.

setup.cfg's `package_dir` installs `envs/` as `testbed.envs` and `baselines/` as `testbed.baselines`; griffe reads
source from the folders it finds, and `testbed/` has no `envs` folder. After `testbed` loads, each mapped folder is
loaded and attached under its installed name, so `::: testbed.envs.ShiftedEnv` and the docstrings' cross-references
resolve. The mapping is read from setup.cfg itself, so a package added there needs nothing here.
"""

import configparser
from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parents[1]


def package_dirs() -> dict[str, str]:
    """setup.cfg's `[options] package_dir` as {installed name: folder}, the mapped subpackages only."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    rows = (line.split("=") for line in config["options"]["package_dir"].strip().splitlines())
    mapping = {name.strip(): folder.strip() for name, folder in rows}
    return {name: folder for name, folder in mapping.items() if folder != name.replace(".", "/")}


class PackageDir(griffe.Extension):
    """Attach each mapped folder to its parent package once the parent has loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for name, folder in package_dirs().items():
            parent, _, child = name.rpartition(".")
            if parent != pkg.path or child in pkg.members:
                continue
            module = loader.load(folder, try_relative_path=False, find_stubs_package=False)
            del loader.modules_collection.members[folder]  # known by its installed name only
            pkg.set_member(child, module)

"""A sweep's folder: one sub-folder per run, named by its id, and the manifest of the runs the sweep file has now.

A run's folder holds `run.json` (its axis values and arguments) first, then Lightning's `config.yaml` and
`metrics.csv`, `results.json`, and last a `done` marker, each written atomically. A folder without `done` was
left by a killed or failed attempt (a failure leaves `error.txt`) and is cleared when the run starts again.
"""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from testbed.errors import ConfigError
from testbed.files import write_atomic
from testbed.sweep.spec import Run
from testbed.version import code_version


def start(run: Run, root: Path) -> Path | None:
    """The run's empty folder with its run.json, or None if the run is done."""
    out = root / run.id
    if (out / "done").exists():
        return None
    if out.exists():
        shutil.rmtree(out)  # half-written by a killed or failed attempt
    out.mkdir(parents=True)
    described = {k: v for k, v in asdict(run).items() if k != "config"}  # config.yaml holds the config
    described["code"] = code_version()
    write_atomic(out / "run.json", json.dumps(described, indent=2) + "\n")
    return out


def write_manifest(root: Path, name: str, config: Path, runs: list[Run], ids: int) -> None:
    """The sweep file as last run, the ids of its runs (the analysis reads only these: an edited file's old runs
    stay on disk, apart) and the scheme that made them (`testbed.sweep.resolve.ID_SCHEME`)."""
    write_atomic(root / "sweep.yaml", Path(config).read_text())
    write_atomic(root / "manifest.json", json.dumps({"sweep": name, "ids": ids, "runs": [run.id for run in runs]})
                 + "\n")


def check_ids(root: Path, ids: int) -> None:
    """Refuse a folder whose done runs other code identified by another scheme: this sweep would not find them
    and would train every one again. A manifest without a scheme, or none, is scheme 1."""
    manifest = root / "manifest.json"
    made = json.loads(manifest.read_text()).get("ids", 1) if manifest.exists() else 1
    if made != ids and next(root.glob("*/done"), None) is not None:
        raise ConfigError(f"--out: {root} holds runs whose ids another version of testbed made (id scheme {made}; "
                          f"this one uses {ids}), so this sweep would train them all again: sweep into a new --out "
                          "(`testbed report` still reads this one)")


def redo_older(root: Path) -> int:
    """Mark for rerunning every done run of `root` that other code made (its run.json's `code` differs from this
    code's, or is missing); returns how many."""
    older = 0
    for done in root.glob("*/done") if root.is_dir() else []:
        try:
            made_by = json.loads((done.parent / "run.json").read_text()).get("code")
        except (OSError, ValueError):
            made_by = None
        if made_by != code_version():
            done.unlink()
            older += 1
    return older

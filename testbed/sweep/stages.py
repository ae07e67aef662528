"""Sweep stages: runs that start from the final weights of an earlier stage's run at the same scale point and seed.

A sweep file may declare `stages:`, each a name with its own `args` and `axes` and, optionally, `from: <stage>`.
A stage's axes are crossed with every scale point of the sweep's axes, whatever the search (a dose-response
needs every dose at every point):

    axes: {model.width: [8, 16, 32]}          # the scale points every stage shares
    stages:
      pretrain: {args: {model: ERM}}
      online: {from: pretrain, args: {model: Online}, axes: {model.fraction: [0, 0.1, 1]}}

Every run of `online` starts (`model.init_ckpt`) from the `pretrain` run with the same values of the sweep's
axes, the same seed and the same hyperparameter draw (draw 0 if the parent stage has one draw); a parent stage
therefore has no axes of its own. A child run's id is the hash of its own config and its parent's id: a child
of another parent is another run. The parent's final weights are saved to `final.ckpt` in its folder, kept
while a child still needs them (all the sweep's checkpoints with `keep_checkpoints: true`), and a child's
results.json records `parent: {run, checkpoint}`.

Stages run in waves, in dependency order, under every executor: a wave's runs start once the previous wave is
over. A child whose parent did not finish fails with an `error.txt` that says so. A parent that is run again
(half-written, failed, or done but its checkpoint since deleted while a child still needs it) makes its
children stale: their `done` markers are removed before anything runs, and they run again after it.
"""

import json
from pathlib import Path
from typing import Any

from testbed.errors import ConfigError
from testbed.files import write_atomic

CHECKPOINT = "final.ckpt"
STAGE_KEYS = ("from", "args", "axes")


def check_stages(stages: Any, shared_axes: dict[str, Any]) -> None:
    """A ConfigError naming the field for a malformed `stages:` block, an unknown parent or a cycle."""
    if not isinstance(stages, dict) or not stages:
        raise ConfigError("sweep.stages: must be a mapping of stage names to {from, args, axes}")
    for name, stage in stages.items():
        if not isinstance(stage, dict):
            raise ConfigError(f"sweep.stages.{name}: must be a mapping with keys {', '.join(STAGE_KEYS)}")
        for key in stage:
            if key not in STAGE_KEYS:
                raise ConfigError(f"sweep.stages.{name}.{key}: unknown key; allowed keys are {', '.join(STAGE_KEYS)}")
        for key in ("args", "axes"):
            if not isinstance(stage.get(key, {}), dict):
                raise ConfigError(f"sweep.stages.{name}.{key}: must be a mapping")
        for axis in stage.get("axes", {}):
            if axis in shared_axes or axis == "config":
                raise ConfigError(f"sweep.stages.{name}.axes.{axis}: not allowed in a stage; the sweep's axes (and "
                                  "config) are the scale points every stage shares")
        parent = stage.get("from")
        if parent is not None and parent not in stages:
            raise ConfigError(f"sweep.stages.{name}.from: {parent!r} is not a stage; stages are {', '.join(stages)}")
        if parent is not None and stages[parent].get("axes"):
            raise ConfigError(f"sweep.stages.{name}.from: stage {parent!r} has axes of its own, so it has several runs "
                              "per scale point and seed; a parent stage may not")
    order(stages)


def order(stages: dict[str, dict]) -> list[str]:
    """The stage names, parents before children; a ConfigError names a cycle."""
    done: list[str] = []
    for name in stages:
        chain = [name]
        while (parent := stages[chain[-1]].get("from")) is not None and parent not in done:
            if parent in chain:
                raise ConfigError(f"sweep.stages: a cycle: {' -> '.join([*chain[chain.index(parent):], parent])}")
            chain.append(parent)
        done += [n for n in reversed(chain) if n not in done]
    return done


def depth(stages: dict[str, dict], name: str) -> int:
    parent = stages[name].get("from")
    return 0 if parent is None else 1 + depth(stages, parent)


SAVE = "testbed.training.save_final.SaveFinal"  # the callback that writes a parent's CHECKPOINT


def children_of(runs: list) -> dict[str, list]:
    kids: dict[str, list] = {}
    for run in runs:
        if run.parent:
            kids.setdefault(run.parent, []).append(run)
    return kids


def done(root: Path, run: Any) -> bool:
    return (root / run.id / "done").exists()


def stale(runs: list, root: Path) -> list:
    """The runs to run (parents first): those not done, parents whose checkpoint is gone while a child of theirs
    must run, and every child of a parent that runs."""
    kids, by_id = children_of(runs), {run.id: run for run in runs}
    todo = {run.id for run in runs if not done(root, run)}
    changed = True
    while changed:
        changed = False
        for run in runs:
            if run.id in todo:
                continue
            needed = any(k.id in todo for k in kids.get(run.id, [])) and not (root / run.id / CHECKPOINT).exists()
            if needed or (run.parent and run.parent in todo):
                todo.add(run.id)
                changed = True
    return [by_id[i] for i in by_id if i in todo]


def forget(runs: list, root: Path) -> None:
    """Remove the `done` marker of finished runs that must run again (a redone parent's children)."""
    for run in runs:
        (root / run.id / "done").unlink(missing_ok=True)


def waves(runs: list, sweep: Any) -> list[list]:
    """The runs in dependency order: every run of one stage depth in one wave."""
    if not sweep.stages:
        return [runs]
    depths: dict[int, list] = {}
    for run in runs:
        depths.setdefault(depth(sweep.stages, run.stage), []).append(run)
    return [depths[d] for d in sorted(depths)]


def orphans(runs: list, root: Path) -> list:
    """The runs whose parent has not finished; each gets an `error.txt` that names the parent."""
    lost = [run for run in runs if run.parent and not ((root / run.parent / "done").exists()
                                                       and (root / run.parent / CHECKPOINT).exists())]
    for run in lost:
        (root / run.id).mkdir(parents=True, exist_ok=True)
        write_atomic(root / run.id / "error.txt", f"its parent run {run.parent} did not finish or left no "
                                                  f"{CHECKPOINT}; the next invocation of the sweep runs both\n")
    return lost


def record_parent(run: Any, out: Path) -> None:
    """Add the parent's run id and checkpoint to a finished child's results.json."""
    path = out / "results.json"
    if run.parent and path.exists():
        results = json.loads(path.read_text())
        results["parent"] = {"run": run.parent, "checkpoint": run.config["model"]["init_args"]["init_ckpt"]}
        write_atomic(path, json.dumps(results, indent=2) + "\n")


def release(runs: list, root: Path, keep: bool) -> None:
    """Delete the checkpoints that no child still needs (every child done), unless `keep`."""
    if keep:
        return
    for parent, kids in children_of(runs).items():
        if all(done(root, k) for k in kids):
            (root / parent / CHECKPOINT).unlink(missing_ok=True)

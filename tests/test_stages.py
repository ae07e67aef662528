"""Sweep stages: a later stage's runs start from the final weights of the earlier stage's run at the same scale point
and seed, resume after SIGKILL, run again when their parent does, and bad stage graphs fail before anything runs."""

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CONFIGS, ROOT, cli_error, run_cli

from testbed.sweep import Run
from testbed.sweep.stages import CHECKPOINT, stale

TINY = {"data.n_train": 200, "data.n_val": 100, "data.n_test": 100, "data.image_size": 8, "trainer.max_epochs": 1,
        "trainer.enable_checkpointing": False, "model.probe": False}
STAGES = {"pretrain": {"args": {"model": "ERM"}},
          "finetune": {"from": "pretrain", "args": {"model": "ERM"}, "axes": {"model.lr": [1e-3, 2e-3, 3e-3, 4e-3]}}}


def write_sweep(path: Path, **fields) -> Path:
    sweep = {"name": "s", "configs": [str(CONFIGS / "envs" / "confounded.yaml")], "args": TINY,
             "axes": {"model.width": [8]}, "seeds": [0], "stages": STAGES, **fields}
    path.write_text(json.dumps(sweep))  # JSON is YAML
    return path


def runs_of(root: Path) -> dict[str, dict]:
    """run.json of every run folder, by id."""
    return {d.name: json.loads((d / "run.json").read_text()) for d in root.iterdir() if (d / "run.json").exists()}


def finished(root: Path, stage: str) -> dict[str, float]:
    """The done runs of a stage and their results.json modification times."""
    return {i: (root / i / "results.json").stat().st_mtime_ns for i, r in runs_of(root).items()
            if r["stage"] == stage and (root / i / "done").exists()}


def test_a_two_stage_sweep_killed_in_its_second_stage_resumes_and_a_redone_parent_reruns_its_children(tmp_path):
    sweep = write_sweep(tmp_path / "s.yaml")
    cmd = [sys.executable, "-m", "testbed", "sweep", "-c", str(sweep), "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = tmp_path / "out/s"
    deadline = time.time() + 120
    while time.time() < deadline and not (root.exists() and finished(root, "finetune")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ((parent, parent_time),) = finished(root, "pretrain").items()
    children_before = finished(root, "finetune")
    assert 1 <= len(children_before) < 4, "the sweep must be killed while the second stage runs"
    assert (root / parent / CHECKPOINT).exists()  # still needed by the children not yet run

    run_cli("sweep", "-c", str(sweep), "--out", str(tmp_path / "out"))  # resumed
    assert finished(root, "pretrain") == {parent: parent_time}  # not redone
    children = finished(root, "finetune")
    assert len(children) == 4 and all(children[i] == t for i, t in children_before.items())  # none redone
    for child in children:
        results = json.loads((root / child / "results.json").read_text())
        assert results["parent"] == {"run": parent, "checkpoint": str(root / parent / CHECKPOINT)}
        assert runs_of(root)[child]["parent"] == parent
        assert f"init_ckpt: {root / parent / CHECKPOINT}" in (root / child / "config.yaml").read_text()
    assert not (root / parent / CHECKPOINT).exists()  # no child needs it any more

    (root / parent / "done").unlink()  # as if the parent were half-written: it runs again, and so do its children
    run_cli("sweep", "-c", str(sweep), "--out", str(tmp_path / "out"))
    assert finished(root, "pretrain")[parent] > parent_time
    again = finished(root, "finetune")
    assert set(again) == set(children) and all(again[i] > children[i] for i in children)


def test_a_parent_whose_checkpoint_is_gone_runs_again_when_a_child_must_run(tmp_path):
    root = tmp_path
    parent, done_child, new_child = (Run("s", {}, 0, [], id=i) for i in ("p", "c1", "c2"))
    done_child.parent = new_child.parent = "p"
    for run in (parent, done_child):
        (root / run.id).mkdir()
        (root / run.id / "done").write_text("")
    runs = [parent, done_child, new_child]
    assert [r.id for r in stale(runs, root)] == ["p", "c1", "c2"]  # no checkpoint: the parent and all its children
    (root / "p" / CHECKPOINT).write_text("")
    assert [r.id for r in stale(runs, root)] == ["c2"]
    (root / "c2").mkdir()
    (root / "c2" / "done").write_text("")
    (root / "p" / CHECKPOINT).unlink()
    assert stale(runs, root) == []  # every child done: the checkpoint is not needed


@pytest.mark.parametrize("stages,message", [
    ({"a": {"args": {"model": "ERM"}}, "b": {"from": "pretrian"}},
     "sweep.stages.b.from: 'pretrian' is not a stage; stages are a, b"),
    ({"a": {"from": "c"}, "b": {"from": "a"}, "c": {"from": "b"}}, "sweep.stages: a cycle: a -> c -> b -> a"),
    ({"a": {"axes": {"model.lr": [1e-3, 1e-2]}}, "b": {"from": "a"}},
     "sweep.stages.b.from: stage 'a' has axes of its own"),
    ({"a": {"axes": {"model.width": [4]}}}, "sweep.stages.a.axes.model.width: not allowed in a stage"),
    ({"a": {"form": "b"}}, "sweep.stages.a.form: unknown key; allowed keys are from, args, axes"),
])
def test_a_bad_stage_graph_fails_with_one_line_before_anything_runs(tmp_path, capsys, stages, message):
    err = cli_error(capsys, "sweep", "-c", str(write_sweep(tmp_path / "s.yaml", stages=stages)), "--out",
                    str(tmp_path / "out"))
    assert len(err) == 1 and err[0].startswith(f"testbed: error: {message}"), err
    assert not (tmp_path / "out").exists()


def test_a_star_sweep_crosses_a_stages_axes_with_every_scale_point(tmp_path, capsys):
    """The star thins the sweep's own axes only: a dose-response needs every dose at every width and size."""
    stages = {"erm": {"args": {"model": "ERM"}},
              "online": {"from": "erm", "args": {"model": "Online"}, "axes": {"model.fraction": [0.0, 0.3, 1.0]}}}
    sweep = write_sweep(tmp_path / "s.yaml", search="star", stages=stages,
                        axes={"model.width": [4, 8, 16], "data.n_train": [100, 200]})
    run_cli("sweep", "-c", str(sweep), "--out", str(tmp_path / "out"), "--dry-run")
    lines = [line for line in capsys.readouterr().out.splitlines() if "stage=online" in line]
    points = [(4, 200), (8, 200), (16, 200), (16, 100)]  # the star of 3 widths x 2 sizes
    doses = {(p, f) for p in points for f in (0.0, 0.3, 1.0)}
    listed = {((a["model.width"], a["data.n_train"]), a["model.fraction"])
              for a in (ast.literal_eval(line.split(" ", 1)[1].rsplit("}", 1)[0] + "}") for line in lines)}
    assert listed == doses and len(lines) == len(doses)

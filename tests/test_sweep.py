"""Sweeps: expansion, resumption after SIGKILL, failures, bad sweep files, and the Ray executor."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CONFIGS, ROOT, assert_same_metrics, run_cli

from testbed.baselines import ERM
from testbed.sweep import expand, load_sweep
from testbed.sweep.job import packs
from testbed.sweep.resolve import identify

TINY = {"model": "ERM", "data.n_train": 200, "data.n_val": 100, "data.n_test": 100, "trainer.max_epochs": 1,
        "trainer.enable_checkpointing": False, "model.width": 8, "model.probe": False}


def write_sweep(path: Path, **fields) -> Path:
    sweep = {"name": "s", "configs": [str(CONFIGS / "envs" / "confounded.yaml")], "args": TINY,
             "axes": {"model": ["ERM", "Oracle"], "data.n_train": [200, 300]}, "seeds": [0, 1], **fields}
    path.write_text(json.dumps(sweep))  # JSON is YAML
    return path


def finished(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and (d / "done").exists())


def test_grid_expands_axes_times_seeds_with_distinct_ids(tmp_path):
    runs = expand(load_sweep(write_sweep(tmp_path / "s.yaml")))
    identify(runs)
    assert len(runs) == 8 and len({r.id for r in runs}) == 8
    assert {(r.axes["model"], r.axes["data.n_train"], r.seed) for r in runs} == {
        (m, n, s) for m in ("ERM", "Oracle") for n in (200, 300) for s in (0, 1)}


def test_star_search_varies_one_scale_axis_at_a_time(tmp_path):
    axes = {"model": ["ERM", "Oracle"], "model.width": [4, 8, 16], "data.n_train": [100, 200, 400],
            "trainer.max_steps": [10, 30]}
    runs = expand(load_sweep(write_sweep(tmp_path / "s.yaml", axes=axes, search="star", seeds=[0])))
    points = {tuple(r.axes.values()) for r in runs}
    # Per baseline: the centre (16, 400, 30), two more widths, two more sizes, one more budget.
    assert len(runs) == len(points) == 2 * 6
    assert ("Oracle", 4, 400, 30) in points and ("ERM", 16, 100, 30) in points and ("ERM", 16, 400, 10) in points
    assert ("ERM", 4, 100, 30) not in points


def test_random_search_is_seeded_per_axis(tmp_path):
    axes = {"model.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "model.width": [8, 16, 32]}
    base = expand(load_sweep(write_sweep(tmp_path / "a.yaml", axes=axes, search="random", samples=5)))
    more = expand(load_sweep(write_sweep(tmp_path / "b.yaml", axes={**axes, "model.depth": [1, 2]},
                                         search="random", samples=5)))
    assert len(base) == 10
    assert all(1e-4 <= r.axes["model.lr"] <= 1e-2 for r in base)
    # Adding an axis leaves the draws of the others unchanged.
    assert [r.axes["model.lr"] for r in base] == [r.axes["model.lr"] for r in more]


@pytest.mark.parametrize("fields,message", [
    ({"axes": {"model.bogus": [1]}}, "model.bogus"),
    ({"axes": {"data.train_corrs": [[2.0, 0.5]]}}, "train_corrs"),
    ({"colours": 3}, "sweep.colours: unknown key"),
    ({"axes": {"model.width": []}}, "sweep.axes.model.width"),
    ({"search": "bayes"}, "sweep.search"),
    ({"pack": "yes"}, "sweep.pack"),
    ({"args": {**TINY, "optimizer": "SGD"}}, "optimizer: not supported in sweeps"),
    ({"hparams": "defaults"}, "sweep.hparams: must be 'default' or a mapping"),
    ({"hparams": {"model.lr": {"low": 1e-4}}, "draws": 2}, "sweep.hparams.model.lr: a range needs low and high"),
    ({"hparams": {"model.lr": {"low": 0, "high": 1, "log": True}}, "draws": 2}, "needs low > 0"),
    ({"hparams": {"model.lr": {"low": 1e-4, "high": 1e-2}}}, "sweep.draws: required"),
    ({"hparams": {"model.lr": [1e-3]}, "draws": 0}, "sweep.draws: 0 is not allowed"),
    ({"hparams": {"data.n_train": [200]}}, "sweep.hparams.data.n_train: also a scale axis"),
    ({"hparams": {"model.bogus": [1]}}, "model.bogus"),
    ({"hparams": "default", "draws": 2, "axes": {"model": ["ERM"], "model.lr": [1e-3, 1e-2]}},
     "sweep.hparams: model.lr is drawn (hparams: default, ERM) and also an axis"),
    ({"hparams": {"model.lr": [1e-3]}, "axes": {"model.width": [8]},
      "stages": {"a": {"args": {"model": "ERM"}, "axes": {"model.lr": [1e-2]}}}},
     "sweep.hparams: model.lr is drawn (hparams) and also an axis"),
])
def test_bad_sweep_file_one_line_exit_2_nothing_started(tmp_path, monkeypatch, capsys, fields, message):
    monkeypatch.chdir(tmp_path)
    sweep = write_sweep(tmp_path / "bad.yaml", **fields)
    with pytest.raises(SystemExit) as exit_:
        run_cli("sweep", "-c", str(sweep), "--out", "out")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_hparams_grid_is_crossed_with_every_scale_point_and_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = write_sweep(tmp_path / "s.yaml", axes={"model.width": [8, 16]}, hparams={"model.lr": [1e-3, 1e-2]},
                        args={**TINY, "trainer.limit_val_batches": 0}, seeds=[0, 1])
    runs = expand(load_sweep(sweep))
    identify(runs)
    assert len(runs) == 8 and len({r.id for r in runs}) == 8
    assert {(r.axes["model.width"], r.draw, r.hparams["model.lr"], r.seed) for r in runs} == {
        (w, d, lr, s) for w in (8, 16) for d, lr in enumerate((1e-3, 1e-2)) for s in (0, 1)}
    assert all(r.config["model"]["init_args"]["lr"] == r.hparams["model.lr"] for r in runs)
    # The seeds and learning-rate draws of one width pack together; widths do not.
    assert sorted(sorted((r.axes["model.width"], r.draw, r.seed) for r in job) for job in packs(runs)) == [
        [(w, d, s) for d in (0, 1) for s in (0, 1)] for w in (8, 16)]
    run_cli("sweep", "-c", str(sweep), "--out", "out")
    recorded = [json.loads((d / "run.json").read_text()) for d in finished(tmp_path / "out/s")]
    assert sorted((r["draw"], r["hparams"]["model.lr"]) for r in recorded) == [(0, 1e-3)] * 4 + [(1, 1e-2)] * 4


def test_entries_that_resolve_to_one_run_run_once_under_the_first_entrys_labels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = write_sweep(tmp_path / "s.yaml", axes={"model.width": [8]}, hparams={"model.lr": [1e-3, 1e-3]},
                        args={**TINY, "trainer.limit_val_batches": 0}, seeds=[0])
    run_cli("sweep", "-c", str(sweep), "--out", "out")
    (run,) = [json.loads((d / "run.json").read_text()) for d in finished(tmp_path / "out/s")]
    assert (run["draw"], run["hparams"]) == (0, {"model.lr": 1e-3})


def test_hparams_ranges_are_drawn_per_name_and_default_ranges_come_from_each_baseline(tmp_path):
    lr = {"model.lr": {"low": 1e-4, "high": 1e-2, "log": True}}
    base = expand(load_sweep(write_sweep(tmp_path / "a.yaml", hparams=lr, draws=3, seeds=[0])))
    more = expand(load_sweep(write_sweep(tmp_path / "b.yaml", hparams={**lr, "model.weight_decay": [0, 1e-4]},
                                         draws=3, seeds=[0])))
    assert len(base) == 4 * 3 and [r.draw for r in base[:3]] == [0, 1, 2]
    draws = [r.hparams["model.lr"] for r in base]
    assert all(1e-4 <= v <= 1e-2 for v in draws) and len(set(draws)) == 3  # the same 3 draws at every point
    assert draws == [r.hparams["model.lr"] for r in more]  # adding a knob leaves the others' draws unchanged
    runs = expand(load_sweep(write_sweep(tmp_path / "c.yaml", hparams="default", draws=2, seeds=[0],
                                         axes={"model": ["ERM", "IRM", "GroupDRO"]})))
    keys = {r.axes["model"]: set(r.hparams) for r in runs}
    assert keys == {"ERM": {"model.lr", "model.weight_decay"},
                    "IRM": {"model.lr", "model.weight_decay", "model.penalty_weight", "model.anneal_steps"},
                    "GroupDRO": {"model.lr", "model.weight_decay", "model.eta", "model.adjustment"}}
    irm = [r.hparams for r in runs if r.axes["model"] == "IRM"]
    assert all(0.1 <= h["model.penalty_weight"] <= 1e5 and isinstance(h["model.anneal_steps"], int) for h in irm)


def test_malformed_yaml_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: s\naxes: [unclosed\n")
    with pytest.raises(SystemExit) as exit_:
        run_cli("sweep", "-c", str(bad), "--out", "out")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "not valid YAML" in err[0] and str(bad) in err[0], err
    assert not (tmp_path / "out").exists()


class Exploding(ERM):
    """Fails mid-training at width 16: a run that breaks after the sweep has started."""

    def training_step(self, batch, batch_idx):
        if self.hparams.width == 16:
            raise RuntimeError("boom at width 16")
        return super().training_step(batch, batch_idx)


def test_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = write_sweep(tmp_path / "s.yaml", axes={"model": ["test_sweep.Exploding"], "model.width": [8, 16]},
                        seeds=[0])
    with pytest.raises(SystemExit) as exit_:  # the sweep finishes the others, then says runs failed
        run_cli("sweep", "-c", str(sweep), "--out", "out")
    assert exit_.value.code == 1
    runs = [d for d in (tmp_path / "out/s").iterdir() if d.is_dir()]
    assert len(runs) == 2
    (ok,) = finished(tmp_path / "out/s")
    failed = next(d for d in runs if d != ok)
    assert "boom at width 16" in (failed / "error.txt").read_text()
    assert not (failed / "done").exists()


def test_sweep_killed_with_sigkill_resumes_without_losing_or_repeating_a_run(tmp_path):
    sweep = write_sweep(tmp_path / "s.yaml", axes={"model.width": [8, 16, 24], "data.n_train": [200, 300]})
    cmd = [sys.executable, "-m", "testbed", "sweep", "-c", str(sweep), "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = tmp_path / "out/s"
    deadline = time.time() + 120
    while time.time() < deadline and not (root.exists() and len(finished(root)) >= 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_after = len(finished(root))
    assert 2 <= killed_after < 12, "the sweep must be killed mid-way"
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    runs = [d for d in root.iterdir() if d.is_dir()]
    assert len(runs) == len(finished(root)) == 12  # every run present, exactly once
    described = [json.loads((d / "run.json").read_text()) for d in runs]
    # Each point of the grid exactly once, and each folder's results are those of the run it names: its training
    # set, seed and model size (which grows with the width) are the ones its run.json asks for.
    assert sorted((r["axes"]["model.width"], r["axes"]["data.n_train"], r["seed"]) for r in described) == [
        (w, n, s) for w in (8, 16, 24) for n in (200, 300) for s in (0, 1)]
    params = {}
    for d, r in zip(runs, described):
        result = json.loads((d / "results.json").read_text())
        assert r["id"] == d.name and (result["n_train"], result["seed"]) == (r["axes"]["data.n_train"], r["seed"])
        assert "test/acc_avg" in result["metrics"] and result["steps"] > 0
        params.setdefault(r["axes"]["model.width"], set()).add(result["params"])
        assert not [f for f in d.iterdir() if f.name.startswith(".")], "no temporary file left behind"
    assert [len(p) for p in params.values()] == [1, 1, 1]  # one model size per width, growing with it
    sizes = [params[w].pop() for w in sorted(params)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3


def test_ray_executor_runs_on_a_local_ray_instance(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)
    sweep = write_sweep(tmp_path / "s.yaml", axes={"model": ["ERM", "Oracle"]}, seeds=[0])
    run_cli("sweep", "-c", str(sweep), "--out", "ray", "--executor", "ray")
    run_cli("sweep", "-c", str(sweep), "--out", "local")
    # Ray's workers run what this process runs: the same folders, each with the same results (float sums aside).
    ray, local = (finished(tmp_path / out / "s") for out in ("ray", "local"))
    assert [d.name for d in ray] == [d.name for d in local] and len(ray) == 2
    for a, b in zip(ray, local):
        x, y = (json.loads((d / "results.json").read_text()) for d in (a, b))
        assert (x["model"], x["seed"], x["steps"]) == (y["model"], y["seed"], y["steps"])
        assert_same_metrics(x["metrics"], y["metrics"])


def children(pid: int) -> list[int]:
    """The process ids whose parent is `pid` (the sweep's worker processes), from /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.slow
def test_a_killed_worker_s_run_is_retried_and_the_sweep_completes(tmp_path):
    sweep = write_sweep(tmp_path / "s.yaml", axes={"model.width": [8, 16, 24], "data.n_train": [200, 300]},
                        pack=False)
    cmd = [sys.executable, "-m", "testbed", "sweep", "-c", str(sweep), "--out", str(tmp_path / "out"), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root, deadline = tmp_path / "out/s", time.time() + 120
    while time.time() < deadline and not (root.exists() and finished(root)):  # the workers are running runs
        time.sleep(0.05)
    workers = [p for p in children(proc.pid) if "spawn" in Path(f"/proc/{p}/cmdline").read_text()]
    assert workers, "the sweep runs worker processes"
    os.kill(workers[0], signal.SIGKILL)  # as the out-of-memory killer would
    out, _ = proc.communicate(timeout=120)  # the sweep ends by itself
    assert proc.returncode == 0, out
    assert len(finished(root)) == 12 and not list(root.glob("*/error.txt")), out


KILLER = """
import os, signal
from testbed.envs import SpuriousShapes

class Killer(SpuriousShapes):
    \"\"\"Kills its own process when asked for 300 training samples, as a run that runs out of memory would.\"\"\"

    def make(self, spec, index, split):
        if self.n_train == 300:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().make(spec, index, split)
"""


@pytest.mark.slow
def test_a_run_that_kills_its_worker_twice_fails_with_the_signal_named(tmp_path):
    (tmp_path / "killer.py").write_text(KILLER)
    (tmp_path / "killer.yaml").write_text("data:\n  class_path: killer.Killer\n")
    sweep = write_sweep(tmp_path / "s.yaml", configs=[str(tmp_path / "killer.yaml")], pack=False,
                        axes={"data.n_train": [200, 300]}, seeds=[0])
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "testbed", "sweep", "-c", str(sweep), "--out", str(tmp_path / "out"),
                           "--workers", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    root = tmp_path / "out/s"
    errors = list(root.glob("*/error.txt"))
    assert len(finished(root)) == 1 and len(errors) == 1, proc.stderr
    assert "killed by SIGKILL on each of 2 tries" in errors[0].read_text()

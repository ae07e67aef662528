"""Fast paths give the same answers as the plain ones: packed training vs sequential runs, and a sweep
run built from its resolved config vs a fresh LightningCLI."""

import csv
import json
import logging
import os
from pathlib import Path

import torch
from conftest import CONFIGS, assert_same_metrics, float_sum

from testbed.cli.lightning import lightning_cli
from testbed.envs import SpuriousShapes
from testbed.sweep import Run, expand, load_sweep
from testbed.sweep.job import execute
from testbed.sweep.resolve import identify
from testbed.sweep.spec import as_arg
from testbed.training.backbones import build_backbone
from testbed.training.packed import Member, fit_packed, groups, packable, train_many, train_sequential
from testbed.training.trainer import sweep_run

# Training losses are float32 means, and packed training groups the float32 matmuls of several models: its losses
# and weights round differently from sequential runs'. Measured after 15 Adam steps (mlp and cnn, 1 or 2 threads):
# losses at most 1.8e-7 apart (1.5 units of float32 rounding, 2^-23 = 1.2e-7), weights 3e-8. LOSS_TOL allows 1e-5,
# 80 such units; trajectories that part (another learning rate, another data order) differ by 1e-3 and more.
LOSS_TOL = 1e-5
# The probe's L1 head (FISTA) is fit again on features that differ by that rounding: it amplifies it, up to 1e-3.
PROBE_TOL = 1e-3
# Packed and sequential models differ by their rounding after training (LOSS_TOL on the weights): their test
# probabilities by up to 1e-4 per sample (measured at most 2e-6), so their calibration sums by that bound.
TRAINED_PROB_TOL = 1e-4


def assert_same_log(rows: list[dict], expected: list[dict]) -> None:
    """Two metrics.csv files: the same epochs and steps, the same counts exactly, losses and penalties within
    LOSS_TOL, calibration sums within conftest's bounds and the probe's numbers within PROBE_TOL."""
    assert [(r["epoch"], r["step"]) for r in rows] == [(e["epoch"], e["step"]) for e in expected]
    for r, e in zip(rows, expected):
        assert r.keys() == e.keys() and [k for k in r if r[k]] == [k for k in e if e[k]], (r, e)
        for k in (k for k in e if e[k]):
            tol = (PROBE_TOL if k.startswith("probe/") else LOSS_TOL if k.endswith(("/loss", "/penalty"))
                   else 4 * TRAINED_PROB_TOL if float_sum(k) else 0)
            assert abs(float(r[k]) - float(e[k])) <= tol, (k, r[k], e[k])


def fit_args(run: Run, out: Path) -> list[str]:
    """The `testbed fit` arguments that do what `execute` does for this run."""
    return ["fit", *run.argv, *(as_arg(f"trainer.{k}", v) for k, v in sweep_run(out).items())]


def members(arch: str, n: int = 3) -> list[Member]:
    """n nets and data sets, each with its own seed, learning rate and weight decay (0 for the first)."""
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        env = SpuriousShapes(n_train=300, n_val=10, n_test=10, image_size=8, seed=seed)
        env.setup()
        net = build_backbone(arch, env.input_shape, 2, 8, 2)
        out.append(Member(net, env.train_data, seed, lr=1e-2 / (seed + 1), weight_decay=1e-3 * seed))
    return out


def test_packed_losses_and_weights_match_sequential_runs_with_their_own_lr_and_weight_decay():
    for arch in ("mlp", "cnn"):
        packed_members, sequential_members = members(arch), members(arch)
        fit_packed(packed_members, batch_size=64, epochs=3)
        packed = torch.stack([m.losses for m in packed_members], dim=1)
        sequential = torch.stack([train_sequential(m, 64, 3) for m in sequential_members], dim=1)
        assert packed.shape == sequential.shape == (15, 3)
        assert (packed - sequential).abs().max() <= LOSS_TOL, arch
        for p, s in zip(packed_members, sequential_members):
            for a, b in zip(p.net.parameters(), s.net.parameters()):
                assert torch.allclose(a, b, rtol=0, atol=LOSS_TOL), arch
        # Each model followed its own settings: the trajectories part.
        assert (packed[-1, 0] - packed[-1, 2]).abs() > 1e-3


def test_a_packed_member_whose_stop_rule_fires_freezes_while_the_others_train_on():
    """Member 1 stops after its second epoch: its weights are those of a 2-epoch sequential run, the others'
    those of 4 epochs, and its log ends there."""
    packed_members, sequential_members = members("cnn"), members("cnn")
    packed_members[1].stop = lambda step, loss: step >= 10
    fit_packed(packed_members, batch_size=64, epochs=4)
    assert [len(m.curve) for m in packed_members] == [4, 2, 4]
    assert packed_members[1].epoch_ends == [5, 10] and packed_members[1].samples == 600
    for m, s, epochs in zip(packed_members, sequential_members, (4, 2, 4)):
        assert (m.losses - train_sequential(s, 64, epochs)).abs().max() <= LOSS_TOL
        assert all(torch.allclose(a, b, rtol=0, atol=LOSS_TOL) for a, b in zip(m.net.parameters(), s.net.parameters()))


def draws(arch: str, seeds: int = 2, n: int = 2) -> list[Member]:
    """n learning-rate draws for each seed, in a sweep's order (draw-major): the draws of one seed share its
    data object, data order and initial weights."""
    data = {}
    for seed in range(seeds):
        env = SpuriousShapes(n_train=300, n_val=10, n_test=10, image_size=8, seed=seed)
        env.setup()
        data[seed] = env.train_data
    out = []
    for draw in range(n):
        for seed in range(seeds):
            torch.manual_seed(seed)
            out.append(Member(build_backbone(arch, (3, 8, 8), 2, 8, 2), data[seed], seed, lr=1e-2 / (draw + 1)))
    return out


def test_draws_of_one_seed_train_on_one_shared_batch_and_first_layer_and_still_match_their_sequential_runs():
    for arch in ("mlp", "cnn"):
        packed_members, sequential_members = draws(arch), draws(arch)
        assert groups(packed_members, draws=False) == [[0, 2], [1, 3]]
        packed_members[2].stop = lambda step, loss: step >= 10  # one draw of seed 0 leaves its group early
        fit_packed(packed_members, batch_size=64, epochs=3)
        for m, s, epochs in zip(packed_members, sequential_members, (3, 3, 2, 3)):
            assert len(m.curve) == epochs
            assert (m.losses - train_sequential(s, 64, epochs)).abs().max() <= LOSS_TOL, arch
            assert all(torch.allclose(a, b, rtol=0, atol=LOSS_TOL) for a, b in zip(m.net.parameters(),
                                                                                      s.net.parameters()))
        first, other = packed_members[0].losses, packed_members[2].losses  # seed 0, two learning rates
        # One start (measured equal), then their own paths.
        assert (first[0] - other[0]).abs() <= LOSS_TOL and (first[9] - other[9]).abs() > 1e-4


def test_only_nets_of_one_packable_shape_are_packed_and_others_fall_back_with_a_log_line(caplog):
    assert packable([m.net for m in members("mlp")]) and packable([m.net for m in members("cnn")])
    resnets = members("resnet", n=2)  # BatchNorm: batch statistics per model are not packed
    assert not packable([m.net for m in resnets])
    assert not packable([members("mlp", n=1)[0].net, members("cnn", n=1)[0].net])
    with caplog.at_level(logging.INFO, logger="testbed.training.packed"):
        losses = train_many(resnets, batch_size=64, epochs=1)
    assert losses.shape == (5, 2) and "training them sequentially" in caplog.text


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_sweep_runs_built_from_the_resolved_config_write_what_a_fresh_cli_writes(tmp_path):
    sweep = {"name": "s", "configs": [str(CONFIGS / "envs" / "confounded.yaml")],
             "args": {"data.n_train": 300, "data.n_val": 100, "data.n_test": 100, "trainer.max_epochs": 2,
                      "trainer.enable_checkpointing": False, "model.width": 8},
             "axes": {"model": ["ERM", "Oracle"]}}
    (tmp_path / "s.yaml").write_text(json.dumps(sweep))
    runs: list[Run] = expand(load_sweep(tmp_path / "s.yaml"))
    identify(runs)
    for run in runs:
        assert execute(run, tmp_path / "fast") == "done"
        fresh, fast = tmp_path / "fresh" / run.id, tmp_path / "fast" / run.id
        lightning_cli(fit_args(run, fresh))
        assert {f.name for f in fast.iterdir()} == {f.name for f in fresh.iterdir()} | {"run.json", "done"}
        config = (fresh / "config.yaml").read_text().replace(str(fresh), str(fast))  # only the log folder differs
        assert (fast / "config.yaml").read_text() == config
        a, b = (json.loads((d / "results.json").read_text()) for d in (fast, fresh))
        # The same run by another path: every field alike (the wall time aside), the metrics and the final training
        # loss up to the summation order of their floats.
        assert {k: v for k, v in a.items() if k not in ("wall_time_s", "metrics", "convergence")} == {
            k: v for k, v in b.items() if k not in ("wall_time_s", "metrics", "convergence")}
        assert_same_metrics(a["metrics"], b["metrics"])
        assert {**a["convergence"], "train_loss": 0} == {**b["convergence"], "train_loss": 0}
        assert abs(a["convergence"]["train_loss"] - b["convergence"]["train_loss"]) <= LOSS_TOL
        rows = read_csv(fast / "metrics.csv")
        assert_same_log(rows, read_csv(fresh / "metrics.csv"))
        train = [r for r in rows if r["train/loss"]]
        assert len(train) == 2 and float(train[-1]["train/loss"]) < float(train[0]["train/loss"])  # it learned


def test_a_sweep_packs_seeds_and_draws_of_erm_oracle_group_dro_and_reweight_and_writes_what_sequential_runs_write(
        tmp_path, capsys):
    """Packed (the default) and unpacked runs of one sweep of seeds x hyperparameter draws (lr and weight decay,
    and GroupDRO's eta): the same files, progress and results, the training log equal up to float rounding."""
    sweep = {"name": "p", "configs": [str(CONFIGS / "envs" / "confounded.yaml")],
             "args": {"data.n_train": 300, "data.n_val": 100, "data.n_test": 100, "trainer.max_epochs": 2,
                      "trainer.enable_checkpointing": False, "trainer.limit_val_batches": 0, "model.width": 8,
                      "data.batch_size": 64, "data.image_size": 12, "model.probe": False},
             "axes": {"model": ["ERM", "Oracle", "GroupDRO", "ReWeight"]}, "seeds": [0, 1], "hparams": "default",
             "draws": 2}
    from testbed.sweep.executors import run_sweep

    for pack in (True, False):
        (tmp_path / f"{pack}.yaml").write_text(json.dumps({**sweep, "name": str(pack), "pack": pack}))
        assert run_sweep(tmp_path / f"{pack}.yaml", tmp_path)["done"] == 16
    out = capsys.readouterr().out
    assert "packing: 16 runs train in 4 packed models (ERM 4, GroupDRO 4, Oracle 4, ReWeight 4); 0 one by one;" in out
    runs = [run for run in (tmp_path / "True").iterdir() if run.is_dir()]
    draws = {json.dumps(json.loads((run / "run.json").read_text())["hparams"], sort_keys=True) for run in runs}
    assert len(runs) == 16 and len(draws) == 4  # draws are seeded per key: ERM, Oracle and ReWeight share theirs
    for run in runs:
        other = tmp_path / "False" / run.name
        assert {f.name for f in run.iterdir()} == {f.name for f in other.iterdir()}
        described = [json.loads((d / "run.json").read_text()) for d in (run, other)]
        assert described[0] == {**described[1], "sweep": "True"}  # the same run, axes and draw
        a, b = (json.loads((d / "results.json").read_text()) for d in (run, other))
        for key in ("model", "seed", "params", "n_train", "steps", "epochs", "train_samples", "train_flops"):
            assert a[key] == b[key], key
        assert a["metrics"].keys() == b["metrics"].keys()
        # Both score the final model's validation samples and record convergence and the ceiling.
        assert {"val/acc_id", "val/acc_avg", "val/acc_wg", "val/ood:corr=0.10/acc"} <= a["metrics"].keys()
        assert a["convergence"]["converged"] == b["convergence"]["converged"] and a["ceiling"] == b["ceiling"] == 0.75
        assert abs(a["convergence"]["train_loss"] - b["convergence"]["train_loss"]) <= LOSS_TOL
        assert_same_metrics(a["metrics"], b["metrics"], prob_tol=TRAINED_PROB_TOL)
        assert_same_log(read_csv(run / "metrics.csv"), read_csv(other / "metrics.csv"))


def test_a_packed_cnn_sweep_with_a_step_budget_and_plateau_stops_each_run_where_its_own_fit_stops(
        tmp_path, capsys, monkeypatch):
    """The quickstart's shape: CNN ERM and Oracle, seeds x lr draws, `max_epochs: -1` with a `max_steps` cap
    (ending mid-epoch), `min_steps` and `Plateau`. Packed and unpacked runs stop at the same epoch each (some
    members of a pack on a plateau while others go on), and write the same files, progress, convergence record,
    metrics (1e-3) and training log (1e-5)."""
    # The in-process sweep worker takes every core; one thread, as conftest sets, is as fast for these tiny runs,
    # and two threads on a loaded 2-core machine make each convolution 50x slower.
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    sweep = {"name": "c", "configs": [str(CONFIGS / "envs" / "confounded.yaml")],
             "args": {"model.arch": "cnn", "model.width": 2, "model.depth": 2, "model.probe": False,
                      "data.n_train": 256, "data.n_val": 50, "data.n_test": 50, "data.batch_size": 64,
                      "data.image_size": 8, "trainer.max_epochs": -1, "trainer.min_steps": 8,
                      "trainer.limit_val_batches": 0, "trainer.enable_checkpointing": False,
                      "trainer.callbacks": [{"class_path": "testbed.training.budget.Plateau",
                                             "init_args": {"min_delta": 0.002, "patience": 2}}]},
             "axes": {"model": ["ERM", "Oracle"], "trainer.max_steps": [30]},
             "seeds": [0, 1], "hparams": {"model.lr": [0.01, 0.1]}}
    from testbed.sweep.executors import run_sweep

    for pack in (True, False):
        (tmp_path / f"{pack}.yaml").write_text(json.dumps({**sweep, "name": str(pack), "pack": pack}))
        assert run_sweep(tmp_path / f"{pack}.yaml", tmp_path)["done"] == 8
    out = capsys.readouterr().out
    assert "packing: 8 runs train in 2 packed models (ERM 4, Oracle 4); 0 one by one;" in out
    stops = []
    for run in (tmp_path / "True").iterdir():
        if not run.is_dir():
            continue
        other = tmp_path / "False" / run.name
        assert {f.name for f in run.iterdir()} == {f.name for f in other.iterdir()}
        a, b = (json.loads((d / "results.json").read_text()) for d in (run, other))
        for key in ("model", "seed", "params", "n_train", "steps", "epochs", "train_samples", "train_flops"):
            assert a[key] == b[key], key
        assert a["convergence"]["converged"] == b["convergence"]["converged"]
        assert abs(a["convergence"]["train_loss"] - b["convergence"]["train_loss"]) <= LOSS_TOL
        assert_same_metrics(a["metrics"], b["metrics"], prob_tol=TRAINED_PROB_TOL)
        assert_same_log(read_csv(run / "metrics.csv"), read_csv(other / "metrics.csv"))
        stops.append((a["steps"], a["convergence"]["converged"]))
    # Some runs stop on a plateau, at different steps; others run to the cap, 30 steps, in their 8th epoch.
    assert (30, False) in stops and len({s for s, c in stops if c and s < 30}) >= 2


def test_packed_runs_tested_together_with_their_probes_score_as_each_tested_alone(tmp_path):
    """The draws of one seed are tested in one pass (one packed forward, each intervention made once): with the
    probe on, each run's own and its probe's test metrics equal those of the same run trained and tested alone."""
    sweep = {"configs": [str(CONFIGS / "envs" / "confounded.yaml")], "seeds": [0, 1], "axes": {"model": ["ERM"]},
             "args": {"data.n_train": 300, "data.n_val": 100, "data.n_test": 100, "trainer.max_epochs": 2,
                      "trainer.enable_checkpointing": False, "trainer.limit_val_batches": 0, "model.width": 8,
                      "data.batch_size": 64, "data.image_size": 12, "model.probe": True},
             "hparams": {"model.lr": [0.01, 0.003]}}
    from testbed.sweep.executors import run_sweep

    for pack in (True, False):
        (tmp_path / f"{pack}.yaml").write_text(json.dumps({**sweep, "name": str(pack), "pack": pack}))
        assert run_sweep(tmp_path / f"{pack}.yaml", tmp_path)["done"] == 4
    for run in (tmp_path / "True").iterdir():
        if run.is_dir():
            alone = tmp_path / "False" / run.name
            a, b = (json.loads((d / "results.json").read_text())["metrics"] for d in (run, alone))
            assert {"probe/acc_avg", "test/spurious_reliance"} <= a.keys()
            assert_same_metrics(a, b, prob_tol=TRAINED_PROB_TOL)

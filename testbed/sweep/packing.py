"""Packing: runs that differ only in their seeds and per-model knobs (lr, weight decay, GroupDRO's eta) train as
one batched model (`testbed.packed`), when they train a baseline of `testbed.packed_methods` on an MLP with
nothing else in the Trainer's loop. Here runs are grouped into packed jobs, a job is fitted and each of its runs
written as alone, and the sweep says what packs.
"""

import inspect
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from testbed.compat import set_fit_progress
from testbed.envs.base import TensorLoader
from testbed.packed import Member, fit_packed, unpack
from testbed.packed_methods import METHODS
from testbed.results import finish_fit
from testbed.sweep.fit import build, load
from testbed.sweep.spec import Run
from testbed.trainer import PACKABLE

LIGHTNING_DEFAULTS = {k: p.default for k, p in inspect.signature(L.Trainer).parameters.items()}


def pack_key(config: dict[str, Any]) -> str | None:
    """What runs must share to be packed together (their config without seeds, output and per-model knobs), or
    None if this run cannot be packed: it must train a baseline of `METHODS` with an `mlp` backbone from a
    random init, without validation, checkpoints or other Trainer features, on the CPU, on an environment whose
    batches need no transform."""
    model, trainer = config["model"], config["trainer"]
    changed = {k for k, v in trainer.items() if k in LIGHTNING_DEFAULTS and v != LIGHTNING_DEFAULTS[k]}
    method = METHODS.get(load(model["class_path"]))
    if (method is None or model["init_args"].get("arch") != "mlp" or model["init_args"].get("init_ckpt") is not None
            or changed - PACKABLE or trainer.get("limit_val_batches") != 0
            or trainer.get("enable_checkpointing") is not False or trainer.get("accelerator") not in ("auto", "cpu")
            or torch.cuda.is_available() or not trainer.get("max_epochs")
            or load(config["data"]["class_path"]).on_after_batch_transfer
            is not L.LightningDataModule.on_after_batch_transfer):
        return None
    init = {k: v for k, v in model["init_args"].items() if k not in method.knobs}
    shared = {**config, "seed_everything": None, "trainer": {**trainer, "logger": None},
              "model": {**model, "init_args": init},
              "data": {**config["data"], "init_args": {**config["data"]["init_args"], "seed": None}}}
    return json.dumps(shared, sort_keys=True, default=str)


def fit_packed_runs(configs: list[dict[str, Any]]) -> list[Path]:
    """Runs of one `pack_key`, trained as one packed MLP, then each tested and written as `fit_resolved` writes
    it: the same initial weights, data order, random draws and updates, so the same results up to float
    rounding. Each run's `wall_time_s` is its share of the packed set-up and training time."""
    built, members, wall = [], [], 0.0
    for config in configs:  # each run seeded and built as alone; its RNG state is the one its training starts from
        seed, env, model, trainer = build(config)
        start = time.perf_counter()
        env.setup("fit")
        wall += time.perf_counter() - start
        built.append((seed, env, model, trainer))
        members.append(Member(model.net, env.train_data, env.seed, model.hparams.lr, model.hparams.weight_decay,
                              torch.get_rng_state()))
    start = time.perf_counter()
    _, env, model, trainer = built[0]
    epochs = trainer.max_epochs
    method = METHODS[type(model)]([b[2] for b in built], [b[1] for b in built])
    packed, losses, correct = fit_packed(members, env.batch_size, epochs, method)
    unpack(packed, [m.net for m in members])
    wall = (wall + time.perf_counter() - start) / len(built)
    n = len(members[0].data.y)
    sizes = torch.tensor([len(rows) if isinstance(rows, Tensor) else rows.stop - rows.start
                          for rows in TensorLoader(members[0].data, env.batch_size, shuffle=True).indices()])
    per_epoch = len(sizes)
    paths = []
    for i, (seed, env, model, trainer) in enumerate(built):
        for e in range(epochs):  # the training log of a sequential fit: loss and accuracy per epoch
            steps = slice(e * per_epoch, (e + 1) * per_epoch)
            metrics = {"train/acc": correct[steps, i].sum().item() / n,
                       "train/loss": (losses[steps, i] * sizes).sum().item() / n, "epoch": e}
            model.train_curve.append((metrics["train/loss"], metrics["train/acc"]))
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=(e + 1) * per_epoch - 1)
        # The progress a sequential fit leaves, which results.json and the test row of metrics.csv report.
        set_fit_progress(trainer, epochs, epochs * per_epoch)
        model.samples_seen = epochs * n
        torch.set_rng_state(members[i].rng)  # what the test (the probe's head) draws from, as after its own fit
        paths.append(finish_fit(trainer, model, env, seed, wall))
    return paths


def packs(runs: list[Run]) -> list[list[Run]]:
    """The runs grouped into jobs: those of one `pack_key` together (seeds and hyperparameter draws of one
    scale point), every other run alone."""
    jobs: dict[str, list[Run]] = {}
    for run in runs:
        jobs.setdefault(pack_key(run.config) or run.id, []).append(run)
    return list(jobs.values())


def pack_summary(jobs: list[list[Run]]) -> str:
    """What packs, per baseline: e.g. `8 runs train in 2 packed models (ERM 4, Oracle 4); 2 one by one (IRM 2)`."""
    def per_model(runs: list[Run]) -> str:
        names = [run.config["model"]["class_path"].rsplit(".", 1)[-1] for run in runs]
        counts = ", ".join(f"{name} {names.count(name)}" for name in sorted(set(names)))
        return f" ({counts})" if counts else ""

    packed = [run for job in jobs if len(job) > 1 for run in job]
    alone = [run for job in jobs if len(job) == 1 for run in job]
    return (f"{len(packed)} runs train in {sum(len(job) > 1 for job in jobs)} packed models{per_model(packed)}; "
            f"{len(alone)} one by one{per_model(alone)}")

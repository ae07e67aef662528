"""Packing: runs that differ only in their seeds and per-model knobs (lr, weight decay, GroupDRO's eta) train as
one batched model (`testbed.training.packed`), when they train a baseline of `testbed.run.packed_methods` on an
`mlp` or `cnn` with nothing in the Trainer's loop but the budget (epochs, steps, `Plateau`). Here a job of such
runs is fitted, and each of its runs written as alone; `testbed.sweep.job` groups a sweep's runs into jobs by
`pack_key`.
"""

import contextlib
import ctypes
import inspect
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from testbed.envs.base import ShiftedEnv, TensorLoader
from testbed.run.fit import build, load
from testbed.run.packed_methods import METHODS
from testbed.training.budget import Plateau
from testbed.training.compat import attach_for_test, early_stopping_decision, min_steps, set_fit_progress
from testbed.training.metrics import score
from testbed.training.module import Baseline
from testbed.training.packed import Member, PackedNet, fit_packed
from testbed.training.results import finish_fit, write_results
from testbed.training.trainer import PACKABLE

PACKABLE_ARCHS = ("mlp", "cnn")
PACKABLE_CALLBACKS = ("testbed.training.budget.Plateau",)
LIGHTNING_DEFAULTS = {k: p.default for k, p in inspect.signature(L.Trainer).parameters.items()}


def bounded(trainer: dict[str, Any]) -> bool:
    """Whether the run's length is set by its epochs or steps (Lightning's default of 1000 epochs is not packed)."""
    return (trainer.get("max_epochs") or 0) > 0 or (trainer.get("max_steps") or -1) > 0


def pack_key(config: dict[str, Any]) -> str | None:
    """What runs must share to be packed together (their config without seeds, output and per-model knobs), or
    None if this run cannot be packed: it must train a baseline of `METHODS` (in a variant its `packs` accepts)
    with an `mlp` or `cnn` backbone from a random init, for a number of epochs or steps (optionally until
    `Plateau`), without validation, checkpoints or other Trainer features, on the CPU, on an environment whose
    batches need no transform."""
    model, trainer = config["model"], config["trainer"]
    changed = {k for k, v in trainer.items() if k in LIGHTNING_DEFAULTS and v != LIGHTNING_DEFAULTS[k]}
    method = METHODS.get(load(model["class_path"]))
    callbacks = trainer.get("callbacks") or []
    if (method is None or not method.packs(model["init_args"])
            or model["init_args"].get("arch") not in PACKABLE_ARCHS or model["init_args"].get("init_ckpt") is not None
            or changed - PACKABLE or trainer.get("limit_val_batches") != 0
            or any(not isinstance(c, dict) or c.get("class_path") not in PACKABLE_CALLBACKS for c in callbacks)
            or trainer.get("enable_checkpointing") is not False or trainer.get("accelerator") not in ("auto", "cpu")
            or torch.cuda.is_available() or not bounded(trainer)
            or load(config["data"]["class_path"]).on_after_batch_transfer
            is not L.LightningDataModule.on_after_batch_transfer):
        return None
    init = {k: v for k, v in model["init_args"].items() if k not in method.knobs}
    shared = {**config, "seed_everything": None, "trainer": {**trainer, "logger": None},
              "model": {**model, "init_args": init},
              "data": {**config["data"], "init_args": {**config["data"]["init_args"], "seed": None}}}
    return json.dumps(shared, sort_keys=True, default=str)


def plateau_rule(trainer: L.Trainer) -> Callable[[int, float], bool] | None:
    """The run's `Plateau` callback as a packed member's stop rule: asked at each epoch's end with the global step
    and the epoch's mean training loss, it updates the callback's own state (its `wait_count` makes the
    convergence record) exactly as `Plateau.on_train_epoch_end` does in a sequential fit."""
    plateau = next((c for c in trainer.callbacks if isinstance(c, Plateau)), None)
    if plateau is None:
        return None
    first = min_steps(trainer)
    return lambda step, loss: step >= first and early_stopping_decision(plateau, loss)


def fit_packed_runs(configs: list[dict[str, Any]]) -> list[Path]:
    """Runs of one `pack_key`, trained as one packed model, then each tested and written as `fit_resolved` writes
    it: the same initial weights, data order, random draws, updates and stopping epoch, so the same results up to
    float rounding. Each run's `wall_time_s` is its share of the packed set-up and training time."""
    built, members, wall, samples, keys = [], [], 0.0, {}, []
    for config in configs:  # each run seeded and built as alone; its RNG state is the one its training starts from
        seed, env, model, trainer = build(config)
        start = time.perf_counter()
        # Runs of one data spec and seed (the draws of one seed) share its samples, generated and pooled once:
        # read-only for the packed baselines, and an environment's `setup` only generates them.
        data = json.dumps(config["data"], sort_keys=True, default=str)
        if data in samples and type(env).setup is ShiftedEnv.setup:
            first = samples[data]
            env.data, env.val_data, env._pooled = first.data, first.val_data, first._pooled
        env.setup("fit")
        samples.setdefault(data, env)
        keys.append(data)
        wall += time.perf_counter() - start
        built.append((seed, env, model, trainer))
        members.append(Member(model.net, env.train_data, env.seed, model.hparams.lr, model.hparams.weight_decay,
                              torch.get_rng_state(), plateau_rule(trainer)))
    start = time.perf_counter()
    _, env, model, trainer = built[0]
    method = METHODS[type(model)]([b[2] for b in built], [b[1] for b in built])
    fit_packed(members, env.batch_size, trainer.max_epochs, method, trainer.max_steps)
    wall = (wall + time.perf_counter() - start) / len(built)
    for member, (_, _, model, trainer) in zip(members, built):
        record_fit(member, model, trainer)
    paths = {}
    for data in dict.fromkeys(keys):  # the runs of one seed's samples, tested together where they can be
        group = [k for k, key in enumerate(keys) if key == data]
        seeds, envs, models, trainers = zip(*(built[k] for k in group))
        together = testable_together(models, envs[0], trainers[0])
        if together:
            test_together(envs, models, trainers, [members[k].rng for k in group])
        for k, seed, env, model, trainer in zip(group, seeds, envs, models, trainers):
            if together:
                paths[k] = write_results(trainer, model, seed, wall)
            else:
                torch.set_rng_state(members[k].rng)  # what the test (the probe's head) draws from, as after its fit
                paths[k] = finish_fit(trainer, model, env, seed, wall)
    for _, env, _, _ in built:  # freed now, not when the cyclic collector next finds the job's trainers and models
        env.data, env.val_data, env._pooled = {}, {}, None
    release_heap()
    return [paths[k] for k in range(len(built))]


def record_fit(member: Member, model: Baseline, trainer: L.Trainer) -> None:
    """Log a packed member's training as its sequential fit would, and leave its trainer's progress as that fit
    would (what results.json and the test row of metrics.csv report)."""
    for e, ((loss, acc), end) in enumerate(zip(member.curve, member.epoch_ends)):
        # The training log of a sequential fit: the epoch's mean loss and accuracy, at its last step.
        model.train_curve.append((loss, acc))
        for logger in trainer.loggers:
            logger.log_metrics({"train/acc": acc, "train/loss": loss, "epoch": e}, step=end - 1)
    set_fit_progress(trainer, len(member.curve), member.epoch_ends[-1])
    model.samples_seen, model.epochs_done = member.samples, len(member.curve)


def testable_together(models: Sequence[Baseline], env: ShiftedEnv, trainer: L.Trainer) -> bool:
    """Whether `test_together` tests these runs as `trainer.test` would: fixed test samples (not the states a
    model visits), every test batch, and the models' own `Baseline.forward`."""
    return (type(env).eval_data is ShiftedEnv.eval_data and trainer.limit_test_batches == 1.0
            and all(type(model).forward is Baseline.forward for model in models))


@torch.no_grad()
def test_together(envs: Sequence[ShiftedEnv], models: Sequence[Baseline], trainers: Sequence[L.Trainer],
                  rngs: Sequence[Tensor]) -> None:
    """Test runs whose environments hold the same samples (the draws of one seed) in one pass, each as its own
    `trainer.test` would: every test batch, and each intervention on it, is made once, and one packed forward
    pass gives every model's penultimate features (the first layers as one matmul); each model's heads (and
    probe's) score them into its own tallies, whose metrics it logs and keeps in `results`."""
    for env, model, trainer, rng in zip(envs, models, trainers, rngs):
        attach_for_test(model, trainer, env)
        model.eval()
        torch.set_rng_state(rng)  # what the probe's head draws from, as after the run's own fit
        model._start("test")
    features, env, names = PackedNet([model.net[:-1] for model in models]), envs[0], envs[0].eval_names("test")

    def predict(x: Tensor) -> list[Tensor]:
        return [z for model, f in zip(models, features(x[None], [len(models)])) for z in model.heads(f)]

    counts = [len(model.tallies[names[0]]) for model in models]  # heads each: the model's, and a probe's
    for name in names:
        for batch in TensorLoader(env.eval_data(name, models[0], "test"), env.eval_batch_size):
            for model, tally in zip(models, score(predict, env, batch, models[0]._cf_gen).split(counts)):
                model.tallies[name] += tally
    for model, trainer in zip(models, trainers):
        model.results = model._end("test")
        for logger in trainer.loggers:
            logger.finalize("success")


def release_heap() -> None:
    """Hand the memory freed by a packed job back to the OS. A packed job holds N runs' data and activations at
    once; glibc keeps the freed heap, so without this a worker's resident memory grew by hundreds of MB with every
    packed job (malloc_trim brought a benchmark process from 4.3 GB back to 0.9 GB, with no tensor alive)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)

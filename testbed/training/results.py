"""What a finished run writes: `results.json` with its metrics, scale and provenance, written atomically."""

import functools
import json
import platform
from importlib.metadata import version
from pathlib import Path

import lightning as L

from testbed.files import write_atomic  # also imported from here by the sweep
from testbed.training.budget import convergence
from testbed.training.module import Baseline


@functools.cache
def versions() -> dict[str, str]:
    """Library versions, read from package metadata once per process (about 15 ms a call)."""
    libs = {lib: version(lib) for lib in ("testbed", "torch", "torchvision", "lightning", "numpy")}
    return {"python": platform.python_version(), **libs}


def summary(trainer: L.Trainer, model: Baseline, seed: int | None, wall_time_s: float | None) -> dict:
    """Final metrics (test, and the final model's validation metrics) with the run's scale (parameters, training
    samples, steps and FLOPs), its convergence record, the environment's invariant ceiling and its class and
    attribute counts (which tell a degenerate run, `testbed.analysis.collect.one_class`)."""
    env = trainer.datamodule
    samples = model.samples_seen * trainer.world_size
    # A trainer that only tested a checkpoint trained nothing itself: the scale is the checkpoint's.
    steps, epochs = (trainer.global_step, trainer.current_epoch) if trainer.global_step else (
        model.checkpoint_steps, model.epochs_done)
    train = [s for s in env.specs if s.role == "train"]
    return {
        "model": type(model).__name__,
        "data": type(env).__name__,
        "seed": seed,
        "metrics": {**model.results, **model.final_val()},
        "convergence": model.head_fit or convergence(trainer, model.train_curve),
        "ceiling": env.ceiling,
        "spurious_accuracy": env.spurious_accuracy,  # with the ceiling, whether the regime is a positive control
        "n_classes": env.n_classes,  # with n_attr, the label of each group (g = y * n_attr + a) for the analysis
        "n_attr": env.n_attr,
        "params": model.n_params,
        "n_train": sum(len(env.data[n].y) for n in env.names("train")),
        "train_corr": round(sum(s.corr for s in train) / len(train), 10),  # configuration: 0.9, not 0.8999999999999999
        "steps": steps,
        "epochs": epochs,
        "train_samples": samples,
        "flops_per_sample": model.flops_per_sample,
        "train_flops": samples * model.flops_per_sample,
        "wall_time_s": wall_time_s,
        "versions": versions(),
        **model.extra_results(),
    }


def write_results(trainer: L.Trainer, model: Baseline, seed: int | None, wall_time_s: float | None) -> Path:
    path = Path(trainer.log_dir) / "results.json"
    if trainer.is_global_zero:
        write_atomic(path, json.dumps(summary(trainer, model, seed, wall_time_s), indent=2) + "\n")
    return path


def finish_fit(trainer: L.Trainer, model: Baseline, env: L.LightningDataModule, seed: int | None,
               wall_time_s: float) -> Path:
    """What `fit` does after training, in the CLI and in sweep runs alike: test on every environment, then
    write `results.json`."""
    trainer.test(model, datamodule=env, verbose=False)
    return write_results(trainer, model, seed, wall_time_s)

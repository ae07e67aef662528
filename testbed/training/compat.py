"""Every private Lightning, torch and jsonargparse name testbed uses, in one place, each with why no public one
does.

They are tested against the Lightning versions `setup.cfg` allows (the upper bound is the newest one tested);
`missing()` says which of them a Lightning release no longer has, and tests/test_compat.py fails with that list.
What each buys, as measured in `benchmarks/` (benchmarks/README.md has the figures and commands):
- `CURRENT_FX_NAME`: the default MLP's training overhead over a hand-written loop, 1.18x -> 1.14x (overhead.py);
- `given_hyperparameters` and `subcommand_parser`: sweep workers build runs from configs resolved once, without
  LightningCLI per run: a tiny run's fixed cost 180 ms -> 40 ms (sweep_overhead.py);
- `set_fit_progress` and `early_stopping_decision`: packed training (packed.py), whose runs must report the
  steps and epochs of their own fit and stop by their own `Plateau`;
- `set_step_budget`: no speed; `SampleBudget` could not set a step budget known only at fit start without it;
- `option_types`: a sweep parses its runs once per scale point, not once per hyperparameter draw
  (`testbed.sweep.resolve`);
- `min_steps`, `reload_train_data_every`, `attach_for_test`, `is_compiled`: no speed; what a plateau, a regime's
  stages, packed testing and `Compile` need, which Lightning and torch expose only privately.
It also holds the one setting of Lightning's that testbed undoes where it costs time for nothing (NVML_CHECK).
"""

import ctypes
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import lightning as L
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.core.mixins import hparams_mixin

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def check_cuda_by_nvml_only_where_it_loads() -> None:
    """Lightning sets `PYTORCH_NVML_BASED_CUDA_CHECK=1` when imported, so that `torch.cuda.is_available()` asks
    NVML instead of initialising CUDA (safe before forking workers). Where NVIDIA's driver is absent, every call
    then tries to load libnvidia-ml, fails (about 0.23 ms) and falls back to CUDA's device count, and torch's Adam
    asks at every step: 0.7 ms a step, a sixth of a small sweep run's training here (benchmarks/README.md). Where
    NVML cannot be loaded, go straight to that fallback: the answer is the same, without the failed load."""
    if os.environ.get(NVML_CHECK) == "1" and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libnvidia-ml.so.1")
        except OSError:
            os.environ[NVML_CHECK] = "0"


check_cuda_by_nvml_only_where_it_loads()  # Lightning, imported above, has just set it

# The attribute Lightning sets on a LightningModule around every hook call. Baseline stores it as a plain
# attribute, bypassing nn.Module's __setattr__ (about 5 us a call, a few percent of a small model's step;
# benchmarks/README.md): the module must know the name Lightning writes.
CURRENT_FX_NAME = "_current_fx_name"


def given_hyperparameters(hparams: dict[str, Any], instantiator: str) -> AbstractContextManager[None]:
    """Make `save_hyperparameters()` inside the next module built record `hparams`, as LightningCLI's own
    instantiation does (`_given_hyperparameters_context`). Sweep workers build modules from a resolved config
    without LightningCLI (several times faster for tiny runs); without it their hparams.yaml and checkpoints would
    lack `_class_path` and differ from `testbed fit`'s. No public API does this."""
    return hparams_mixin._given_hyperparameters_context(hparams=hparams, instantiator=instantiator)


def subcommand_parser(cli_class: type[LightningCLI], subcommand: str, args: list[str],
                      **kwargs: Any) -> ArgumentParser:
    """The parser `cli_class` builds for `subcommand`, built without instantiating or running anything.

    Why private names: `LightningCLI(run=False)` builds a parser without the subcommand's own arguments (`fit`'s
    `ckpt_path`), so it cannot resolve a `fit` config as `testbed fit` saves it; the subcommand parsers are kept
    only in `_subcommand_parsers`, and only `_run_subcommand` can skip running the subcommand."""

    class ParseOnly(cli_class):
        def instantiate_classes(self) -> None:
            pass

        def _run_subcommand(self, subcommand: str) -> None:
            pass

    return ParseOnly(**kwargs, args=[subcommand, *args])._subcommand_parsers[subcommand]


def set_fit_progress(trainer: L.Trainer, epochs: int, steps: int) -> None:
    """Record `epochs` and optimiser `steps` as done in the trainer's fit loop, as a sequential fit leaves them:
    packed training (`testbed.training.packed`) trains outside the loop, and results.json and the test row of
    metrics.csv read `current_epoch` and `global_step`, which have no public setters."""
    trainer.fit_loop.epoch_progress.current.completed = epochs
    trainer.fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step.total.completed = steps


def early_stopping_decision(callback: EarlyStopping, value: float) -> bool:
    """Feed an epoch's monitored value to `callback` as its epoch-end check does, updating its best score and
    wait count, and return whether it stops training. Packed training (`testbed.training.packed`) runs each packed run's
    own `Plateau` on that run's loss without a Trainer loop; the check that reads `trainer.callback_metrics` and
    sets `trainer.should_stop` is private (`_evaluate_stopping_criteria`). The value goes in as the float32 tensor
    `LightningModule.log` makes of it."""
    return callback._evaluate_stopping_criteria(torch.tensor(value))[0]


def set_step_budget(trainer: L.Trainer, max_steps: int) -> None:
    """Stop training after `max_steps` optimiser steps, whatever the epochs, from a callback's `on_fit_start`
    (`testbed.training.budget.SampleBudget`: the step count depends on the environment's batch size, known only then).
    `Trainer(max_steps=...)` is fixed at construction."""
    trainer.fit_loop.epoch_loop.max_steps = max_steps
    trainer.fit_loop.max_epochs = -1


def min_steps(trainer: L.Trainer) -> int:
    """The optimiser steps before which Lightning does not stop a fit (`Trainer(min_steps=...)`): a plateau decided
    earlier must not count (`testbed.training.budget.Plateau`, and packing's stop rule). The Trainer keeps the
    value only on its fit loop (`fit_loop.min_steps`); it has no public getter."""
    return trainer.fit_loop.min_steps or 0


def reload_train_data_every(trainer: L.Trainer, epochs: int) -> None:
    """Ask Lightning for the training data again every `epochs` epochs, from inside a fit: a regime's phases
    (ContinualFinetune, DAgger) and JTT's second stage serve new training data at a stage's start. The setting is a
    Trainer argument, fixed at construction in the public API; the fit loop reads the attribute at each epoch
    start, which is what setting it mid-fit relies on."""
    trainer.reload_dataloaders_every_n_epochs = epochs


def attach_for_test(model: L.LightningModule, trainer: L.Trainer, datamodule: L.LightningDataModule) -> None:
    """Attach `model` and `datamodule` to `trainer` as `trainer.test` does, without its loop: packed runs are tested
    together in one pass over shared batches (`testbed.run.packing.test_together`), each logging through its own
    trainer. `trainer.datamodule` and `datamodule.trainer` have no public setters."""
    model.trainer, trainer.datamodule, datamodule.trainer = trainer, datamodule, trainer


def is_compiled(net: torch.nn.Module) -> bool:
    """Whether `net.compile()` has run on this module: torch records it only in the private `_compiled_call_impl`
    (`nn.Module.compile` sets it; no public query exists), and compiling twice would recompile for nothing."""
    return getattr(net, "_compiled_call_impl", None) is not None


def option_types(parser: ArgumentParser) -> dict[str, Any]:
    """Each option of `parser` (by destination) and the type hint jsonargparse checks its values against. A sweep
    sets a drawn number on a parsed config only where the hint says parsing it would give that number back (an
    exact `int` or `float`). Why private: jsonargparse keeps the hint only on its action (`_typehint`), and argparse
    keeps the actions in `_actions`; no public API says what type an option parses to."""
    return {action.dest: getattr(action, "_typehint", None) for action in parser._actions}


def _has_path(obj: object, path: str) -> bool:
    for name in path.split("."):
        if not hasattr(obj, name):
            return False
        obj = getattr(obj, name)
    return True


def missing() -> list[str]:
    """The private names above that this Lightning lacks (empty for a tested version)."""
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    checks: dict[str, Callable[[], bool]] = {
        "lightning.pytorch.core.mixins.hparams_mixin._given_hyperparameters_context":
            lambda: callable(getattr(hparams_mixin, "_given_hyperparameters_context", None)),
        "LightningCLI._run_subcommand": lambda: callable(getattr(LightningCLI, "_run_subcommand", None)),
        "LightningCLI._subcommand_parsers": lambda: "_subcommand_parsers" in _source_names(LightningCLI),
        f"LightningModule.{CURRENT_FX_NAME}": lambda: CURRENT_FX_NAME in vars(L.LightningModule()),
        "Trainer.fit_loop.epoch_progress.current.completed":
            lambda: _has_path(trainer, "fit_loop.epoch_progress.current.completed"),
        "Trainer.fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step.total.completed":
            lambda: _has_path(trainer, "fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step."
                                       "total.completed"),
        "Trainer.fit_loop.epoch_loop.max_steps": lambda: _has_path(trainer, "fit_loop.epoch_loop.max_steps"),
        "Trainer.fit_loop.max_epochs": lambda: _has_path(trainer, "fit_loop.max_epochs"),
        "Trainer.fit_loop.min_steps": lambda: _has_path(trainer, "fit_loop.min_steps"),
        "Trainer.reload_dataloaders_every_n_epochs": lambda: _has_path(trainer, "reload_dataloaders_every_n_epochs"),
        "Trainer.datamodule": lambda: hasattr(trainer, "datamodule"),
        "torch.nn.Module._compiled_call_impl": lambda: hasattr(torch.nn.Module, "_compiled_call_impl"),
        "jsonargparse ActionTypeHint._typehint": _reads_hints,
        "EarlyStopping._evaluate_stopping_criteria":
            lambda: callable(getattr(EarlyStopping, "_evaluate_stopping_criteria", None)),
    }
    return [name for name, present in checks.items() if not present()]


def _reads_hints() -> bool:
    parser = ArgumentParser()
    parser.add_argument("--x", type=float)
    return option_types(parser).get("x") is float


def _source_names(cls: type) -> set[str]:
    """The attribute names the methods of `cls` use."""
    return {name for f in vars(cls).values() if callable(f) and hasattr(f, "__code__") for name in f.__code__.co_names}

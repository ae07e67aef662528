"""Training budgets beyond the Trainer's epochs and steps, and the convergence record every run writes.

A run's length is set by `trainer.max_epochs`, `trainer.max_steps`, a number of training samples
(`SampleBudget`) or "until the training loss plateaus" (`Plateau`, capped by the epochs or steps). Whatever
the budget, `results.json` records under `convergence` whether the run converged by a stated criterion: the
plateau criterion below, applied to the per-epoch training loss (Plateau's own settings if the run used it).
"""

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping

from testbed.errors import ConfigError, check_positive
from testbed.training.compat import min_steps, set_step_budget

MIN_DELTA, PATIENCE = 0.01, 3  # the default criterion: train/loss improved by < 0.01 for 3 epochs in a row
LOG_LOSS = "train/log_loss"  # what a relative Plateau monitors: log(train/loss), put beside it at each epoch's end


def log_delta(min_delta: float) -> float:
    """The fall of log(loss) that a relative improvement by the fraction `min_delta` is: loss < best (1 - min_delta)
    exactly when log(loss) < log(best) - (-log(1 - min_delta))."""
    return -math.log1p(-min_delta)


def plateaued(losses: list[float], min_delta: float, patience: int, relative: bool = False) -> bool:
    """Lightning's EarlyStopping rule replayed on per-epoch losses: the last `patience` epochs each failed to
    improve on the best loss so far by more than `min_delta` (with `relative`, by more than that fraction of it)."""
    if relative:
        losses, min_delta = [math.log(loss) if loss > 0 else -math.inf for loss in losses], log_delta(min_delta)
    best, wait = math.inf, 0
    for loss in losses:
        best, wait = (loss, 0) if loss < best - min_delta else (best, wait + 1)
    return wait >= patience


class Plateau(EarlyStopping):
    """Train until the training loss plateaus: stop once `train/loss` (the epoch's mean) has not improved by
    more than `min_delta` for `patience` epochs; `trainer.max_epochs` or `max_steps` is the cap. Epochs that end
    before `trainer.min_steps` do not count: a stop decided during them (Lightning keeps it, and acts on it at
    `min_steps`) would end a run whose loss has started to fall again.

    The absolute criterion stops sooner the smaller the loss: at a loss of 0.05, a fall of 0.01 is a fifth of
    it, and large models reach small losses first, so it can cut off a late switch from a spurious cue to the
    causal one. With `relative`, an improvement counts if it is more than the fraction `min_delta` of the best
    loss so far, the same at every loss level (Lightning's EarlyStopping on log(train/loss), `LOG_LOSS`).

    Args:
        min_delta: the smallest improvement of the epoch's mean training loss that counts (with `relative`, as
            a fraction of the best loss so far, in [0, 1)).
        patience: epochs in a row without such an improvement before stopping.
        relative: measure improvements relative to the best loss instead of in absolute terms.
    """

    def __init__(self, min_delta: float = MIN_DELTA, patience: int = PATIENCE, relative: bool = False) -> None:
        if min_delta < 0 or (relative and min_delta >= 1):
            allowed = "in [0, 1) with relative" if relative else ">= 0"
            raise ConfigError(f"Plateau.min_delta: {min_delta} is not allowed; it must be {allowed}")
        check_positive("Plateau.patience", patience)
        self.relative, self.given_delta = relative, min_delta
        super().__init__(monitor=LOG_LOSS if relative else "train/loss",
                         min_delta=log_delta(min_delta) if relative else min_delta, patience=patience, mode="min",
                         check_on_train_epoch_end=True)

    def monitored(self, loss: float) -> float:
        """The value this callback compares for an epoch whose mean training loss is `loss`."""
        return (math.log(loss) if loss > 0 else -math.inf) if self.relative else loss

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step >= min_steps(trainer):
            if self.relative and "train/loss" in trainer.callback_metrics:
                loss = float(trainer.callback_metrics["train/loss"])
                trainer.callback_metrics[LOG_LOSS] = torch.tensor(self.monitored(loss))
            super().on_train_epoch_end(trainer, pl_module)


class SampleBudget(Callback):
    """Train on `samples` training samples in all (over every rank), whatever the epochs: the budget becomes
    `ceil(samples / (batch_size * world_size))` optimiser steps, and the trainer's epochs stop limiting it."""

    def __init__(self, samples: int) -> None:
        check_positive("SampleBudget.samples", samples)
        self.samples = samples

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        per_step = trainer.datamodule.batch_size * trainer.world_size
        set_step_budget(trainer, math.ceil(self.samples / per_step))


def convergence(trainer: L.Trainer, curve: list[tuple[float, float]]) -> dict[str, object]:
    """The run's convergence record: the criterion in words, whether the per-epoch training losses meet it, and
    the last epoch's mean training loss and accuracy."""
    plateau = next((c for c in trainer.callbacks if isinstance(c, Plateau)), None)
    min_delta, patience, relative = ((plateau.given_delta, plateau.patience, plateau.relative) if plateau
                                     else (MIN_DELTA, PATIENCE, False))
    by = f"{min_delta:g} of its best so far" if relative else f"{min_delta:g}"
    criterion = (f"train/loss improved by less than {by} in each of the last {patience} epochs"
                 + (" (Plateau stops training once it holds, or the budget does first)" if plateau
                    else " (checked after training)"))
    losses = [loss for loss, _ in curve]
    converged = plateau.wait_count >= patience if plateau else plateaued(losses, min_delta, patience, relative)
    return {"criterion": criterion, "converged": converged,
            "train_loss": curve[-1][0] if curve else None, "train_acc": curve[-1][1] if curve else None}

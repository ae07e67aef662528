"""CRT and ReWeightCRT: classifier re-training on frozen ERM features (Kang et al. 2020, "Decoupling representation
and classifier for long-tailed recognition"; SubpopBench's `CRT` and `ReWeightCRT`)."""

import math

import lightning as L
import torch
from torch import Tensor

from testbed.baselines.balance import Balanced, By, balance_key, inverse_frequency, reweighted
from testbed.envs.base import Batch
from testbed.errors import ConfigError
from testbed.training.budget import SampleBudget
from testbed.training.compat import reload_train_data_every
from testbed.training.module import Baseline
from testbed.training.probe import body_and_head


class CRT(Balanced, Baseline):
    """Two stages in one fit. Stage 1 trains ERM for the first `stage1_frac` of the epochs. Then the backbone is
    frozen (and kept in eval mode), the linear head re-initialised with fresh optimiser state, and the head alone
    trained for the remaining epochs on the training data drawn group-balanced (`by: group`) or class-balanced
    (`by: class`, Kang et al.'s cRT): each epoch a fresh draw, with replacement, of as many samples as the training
    data has, every group equally likely. SubpopBench retrains the head of a separately trained ERM model for as
    many steps again; here the two stages share the fit's epochs (half each by default). The recorded training
    FLOPs count stage 2 at the full model's cost, though only the head is trained.

    Args:
        by: balance the (label, attribute) groups (SubpopBench's choice; needs group labels) or only the classes.
        stage1_frac: fraction of the epochs, rounded down, that train ERM before the head is retrained.
    """

    retraining = False  # whether stage 2 has started: the backbone is frozen
    weights: Tensor  # each group's (or class's) inverse frequency in the training data, set when fitting starts

    def __init__(self, by: By = "group", stage1_frac: float = 0.5, **kwargs) -> None:
        super().__init__(by=by, **kwargs)
        if not 0 < stage1_frac < 1:
            raise ConfigError(f"stage1_frac: {stage1_frac} is outside the allowed range (0, 1)")

    def stage1_epochs(self, trainer: L.Trainer) -> int:
        return math.floor(self.hparams.stage1_frac * trainer.max_epochs)

    def check_trainer(self, trainer: L.Trainer) -> None:
        epochs, name = trainer.max_epochs, type(self).__name__
        if any(isinstance(c, SampleBudget) for c in trainer.callbacks) or epochs is None or epochs < 1:
            raise ConfigError(f"trainer.max_epochs: {name} trains ERM for stage1_frac={self.hparams.stage1_frac} of "
                              "its epochs before it retrains the head, so it needs a number of epochs; a budget in "
                              "samples (SampleBudget) or steps alone sets none")
        if not 0 < self.stage1_epochs(trainer) < epochs:
            raise ConfigError(f"trainer.max_epochs: {epochs} epochs at stage1_frac={self.hparams.stage1_frac} leave "
                              f"{name} no epoch for one of its two stages")

    def train(self, mode: bool = True) -> "CRT":
        super().train(mode)
        if self.retraining:  # a frozen backbone's batch norm statistics and dropout stay as stage 1 left them
            body_and_head(self.net)[0].eval()
        return self

    def on_fit_start(self) -> None:
        self.weights = inverse_frequency(self.hparams.by, self.env).to(self.device)
        if self.current_epoch >= self.stage1_epochs(self.trainer):  # resumed in stage 2
            self.freeze_body()
            self.serve()

    def freeze_body(self) -> None:
        body, _ = body_and_head(self.net)
        for p in body.parameters():
            p.requires_grad_(False)
            p.grad = None
        self.retraining = True
        self.train(self.training)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.current_epoch + 1 == self.stage1_epochs(self.trainer):
            self.freeze_body()
            body_and_head(self.net)[1].reset_parameters()
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()
        if self.retraining:
            self.serve()

    def serve(self) -> None:
        """Serve the next epoch's training data: a group- (or class-) balanced draw with replacement."""
        env = self.env
        env.served = None
        data = env.train_data  # the training environments pooled
        p = self.weights[balance_key(self.hparams.by, env, data)[0].to(self.device)]
        rows = torch.multinomial(p, len(p), replacement=True)
        env.served = Batch(*(t[rows.to(t.device)] for t in data))
        reload_train_data_every(self.trainer, 1)  # Lightning picks up each stage-2 epoch's own draw

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.erm_step(batch)

    def extra_results(self) -> dict[str, object]:
        return {"crt": {"stage1_epochs": self.stage1_epochs(self.trainer)}}


class ReWeightCRT(CRT):
    """CRT whose head is retrained on the training data as it comes, with each sample's cross-entropy weighted by
    the inverse frequency of its group (or class), as ReWeight weights it, instead of balanced draws (SubpopBench's
    `ReWeightCRT`).

    Args:
        by: weight by (label, attribute) group (needs group labels) or by class.
        stage1_frac: fraction of the epochs, rounded down, that train ERM before the head is retrained.
    """

    def serve(self) -> None:
        pass  # the training data as it is

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        if not self.retraining:
            return self.erm_step(batch)
        losses = self.cross_entropy(self(batch.x), batch.y)
        return reweighted(losses, self.weights, balance_key(self.hparams.by, self.env, batch)[0])

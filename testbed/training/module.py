"""Baseline: the LightningModule every training regime subclasses.

It owns the backbone, the optimiser, evaluation (per-environment accuracy, worst group, counterfactual
flip rates) and logging. A subclass only defines `training_step` and, for regimes, its phase logic.
"""

from typing import ClassVar, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from testbed.envs.base import Batch, ShiftedEnv, Split, TensorLoader
from testbed.errors import ConfigError, check_choice, check_positive
from testbed.hparams import Range, Space
from testbed.training.backbones import Arch, backbone_flops, build_backbone, count_params
from testbed.training.budget import SampleBudget
from testbed.training.checkpoints import read_checkpoint
from testbed.training.compat import CURRENT_FX_NAME, reload_train_data_every
from testbed.training.head_solver import fit_head_lbfgs
from testbed.training.metrics import env_metrics, score, summarize, tally_size
from testbed.training.probe import body_and_head, features, heldout_head
from testbed.training.transformer import Pooling

PLAIN_ATTRS = frozenset({CURRENT_FX_NAME, "train_sums", "train_count", "samples_seen", "probe_head",
                         "epochs_done", "checkpoint_steps"})


HeadSolver = Literal["adam", "lbfgs"]

# The environment's attributes that become the model's init arguments of the same name (`testbed fit` links them;
# sweep runs pass them).
MODEL_LINKS = ("n_classes", "input_shape", "vocab_size")


class Baseline(L.LightningModule):
    """Shared base of every baseline.

    Args:
        arch: backbone family (mlp, cnn, resnet, transformer, vit), or a model at its own size: resnet18,
            resnet50, torchvision:<name> (any torchvision classifier), hf:<name> (a Hugging Face text model).
        width: hidden units (mlp), base channels (cnn, resnet) or model dimension (transformer, vit): the
            model-size knob.
        depth: hidden layers (mlp), conv blocks (cnn), blocks per stage (resnet) or layers (transformer, vit).
        lr: Adam learning rate.
        weight_decay: L2 weight: Adam's (coupled) weight decay, the gradient of (weight_decay / 2) ||theta||^2
            (in the loss itself where the method divides its loss, `l2_in_loss`; on the head's weights alone with
            `head_solver: lbfgs`).
        init_ckpt: a checkpoint of the same backbone to start from (e.g. an ERM run's) instead of a random init.
        weights: pretrained weights of a torchvision: model (e.g. IMAGENET1K_V1, DEFAULT) or DEFAULT for an hf: model.
        heads: attention heads (transformer, vit); they must divide `width`.
        pooling: how a transformer or vit summarises its tokens: their mean or a class token (cls).
        patch: side of the square patches vit embeds as tokens.
        probe: after testing, also score a fresh linear head fit on the frozen features (`testbed.training.probe`).
        head_solver: how the model is trained: `adam`, the Trainer's epochs of Adam steps; or `lbfgs`, only the
            linear head, on the fixed features of a backbone with no other trainable parameter (`random_features`),
            fit to convergence in the one training epoch by L-BFGS on the method's (weighted) cross-entropy plus
            (weight_decay / 2) ||W||^2 (`testbed.training.head_solver`; Sagawa et al. 2020b's fit). Only methods
            whose loss is a weighted mean cross-entropy of their training data take it (`weighted_ce`).
        input_shape, n_classes, vocab_size: linked from the environment by the CLI (vocab_size is None for images).
    """

    # Tunable knobs and their default ranges, drawn by a sweep's `hparams: default` (DomainBed's ranges, Gulrajani
    # and Lopez-Paz 2020, with the learning rate centred on Adam's usual 1e-3). Subclasses add their own.
    tunable: ClassVar[Space] = {"lr": Range(1e-4, 1e-2, log=True), "weight_decay": Range(1e-6, 1e-2, log=True)}
    # True where the subclass puts the L2 term (weight_decay / 2) ||theta||^2 in its loss itself and Adam's coupled
    # weight decay must be 0 (IRM and VREx, whose loss is divided by the penalty weight; `AnnealedPenalty`).
    l2_in_loss: ClassVar[bool] = False
    # True where the method's loss is the mean cross-entropy of its training data weighted by `sample_weights`, which
    # `head_solver: lbfgs` can minimise in one solve (ERM, ReSample on its subsample, ReWeight).
    weighted_ce: ClassVar[bool] = False

    def __init__(self, arch: Arch = "mlp", width: int = 256, depth: int = 2, lr: float = 1e-3,
                 weight_decay: float = 0.0, init_ckpt: str | None = None, weights: str | None = None,
                 heads: int = 4, pooling: Pooling = "mean", patch: int = 4, probe: bool = True,
                 head_solver: HeadSolver = "adam", input_shape: tuple[int, ...] = (3, 28, 28), n_classes: int = 2,
                 vocab_size: int | None = None) -> None:
        super().__init__()
        if type(self) is Baseline:
            raise ConfigError("model: Baseline is the shared base class; give a baseline such as --model=ERM")
        check_positive("lr", lr)
        if weight_decay < 0:
            raise ConfigError(f"weight_decay: {weight_decay} is not allowed; it must be >= 0")
        check_choice("head_solver", head_solver, ["adam", "lbfgs"])
        if head_solver == "lbfgs" and not self.weighted_ce:
            raise ConfigError(f"head_solver: lbfgs fits a weighted cross-entropy; {type(self).__name__} minimises "
                              "another loss; choose adam, or ERM, ReSample or ReWeight")
        self.save_hyperparameters()
        knobs = {"vocab_size": vocab_size, "heads": heads, "pooling": pooling, "patch": patch}
        self.net = build_backbone(arch, input_shape, n_classes, width, depth, weights, **knobs)
        self.n_params = count_params(self.net)
        self.flops_per_sample = backbone_flops(self.net, arch, input_shape, n_classes, width, depth, **knobs)
        if head_solver == "lbfgs" and any(p.requires_grad for p in body_and_head(self.net)[0].parameters()):
            raise ConfigError(f"head_solver: lbfgs fits only the linear head, but arch {arch} trains its body too; "
                              "choose random_features, or head_solver adam")
        if init_ckpt is not None:
            self.load_weights(init_ckpt)
        self.samples_seen = 0
        self.epochs_done = 0  # training epochs completed, like samples_seen kept in checkpoints
        self.checkpoint_steps = 0  # optimiser steps of the checkpoint this model was restored from, if any
        self.train_sums: Tensor | None = None  # [summed loss, correct] of this epoch, on the device
        self.train_count = 0
        self.train_curve: list[tuple[float, float]] = []  # (train/loss, train/acc) of every epoch, for `convergence`
        self.tallies: dict[str, Tensor] = {}
        self.probe_head: nn.Module | None = None  # the probe's head while testing (a plain attribute, not a submodule)
        self.results: dict[str, float] = {}
        self.head_fit: dict[str, object] | None = None  # the L-BFGS fit's convergence record (`head_solver: lbfgs`)

    def __setattr__(self, name: str, value: object) -> None:
        # Lightning sets `_current_fx_name` (testbed.training.compat) around every hook call, and the training tallies
        # change every step: plain attributes, which need none of nn.Module's checks for parameters, buffers and
        # submodules (about 5 us a call, a few percent of a small model's step). The probe's head is plain too: it
        # must not become a submodule of the model (its parameters, its checkpoint).
        if name in PLAIN_ATTRS:
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)

    def load_weights(self, path: str, field: str = "init_ckpt") -> None:
        """Start from the weights of a Lightning checkpoint of the same backbone (`field` names it in errors)."""
        state = read_checkpoint(field, path)["state_dict"]
        if state is None:
            raise ConfigError(f"{field}: {path} holds objects beyond tensors, which are not loaded for safety")
        try:  # the backbone's weights; a method's own state (GroupDRO's q) starts afresh
            self.net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
        except RuntimeError as err:
            raise ConfigError(f"{field}: {path} does not fit this backbone ({str(err).splitlines()[0]})") from err

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The run's scale, which `testbed test` of this checkpoint reports (Lightning saves the steps itself).
        checkpoint["samples_seen"], checkpoint["epochs_done"] = self.samples_seen, self.epochs_done

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.samples_seen = checkpoint.get("samples_seen", 0)
        self.epochs_done = checkpoint.get("epochs_done", 0)
        self.checkpoint_steps = checkpoint.get("global_step", 0)

    def check_env(self, env: ShiftedEnv) -> None:
        """Raise a ConfigError if this baseline cannot train on `env` (called before anything is written)."""

    def stages(self) -> tuple[int, str] | None:
        """How many stages a regime splits its epochs into, and what they are called (`(3, "phases")`); None for
        one stage."""
        return None

    def check_trainer(self, trainer: L.Trainer) -> None:
        """Raise a ConfigError if this baseline cannot train for `trainer`'s budget (called once the trainer
        exists, before it writes anything): a regime's stages need a number of epochs that splits evenly."""
        if self.stages() is not None:
            self.epochs_per_stage(trainer)
        if self.hparams.head_solver == "lbfgs" and (trainer.max_epochs != 1 or trainer.max_steps != -1):
            raise ConfigError(f"trainer.max_epochs: {trainer.max_epochs} is not allowed with head_solver lbfgs, "
                              "which fits the head to convergence in one epoch; set trainer.max_epochs: 1")

    def epochs_per_stage(self, trainer: L.Trainer) -> int:
        stages, what = self.stages()
        epochs, name = trainer.max_epochs, type(self).__name__
        if any(isinstance(c, SampleBudget) for c in trainer.callbacks) or epochs is None or epochs < 1:
            raise ConfigError(f"trainer.max_epochs: {name} splits its epochs over {stages} {what}, so it needs a "
                              "number of epochs; a budget in samples (SampleBudget) or steps alone sets none")
        if epochs % stages:
            raise ConfigError(f"trainer.max_epochs: {epochs} does not split evenly over {name}'s {stages} {what}")
        return epochs // stages

    def extra_results(self) -> dict[str, object]:
        """What a regime adds to `results.json` beside the test metrics (phases, stream curves)."""
        return {}

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    @property
    def env(self) -> ShiftedEnv:
        return self.trainer.datamodule

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # On the CPU, torch's default is the single-tensor Adam anyway; saying so skips the per-step check of which
        # kernel to use, which queries the CUDA driver every step (about 0.7 ms: a tenth of a small CNN's step).
        foreach = False if self.device.type == "cpu" else None
        weight_decay = 0.0 if self.l2_in_loss else self.hparams.weight_decay
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=weight_decay, foreach=foreach)

    def sample_weights(self, batch: Batch) -> Tensor:
        """Each sample's weight in the method's mean cross-entropy (where `weighted_ce`): 1 for ERM."""
        return torch.ones(len(batch.y), device=batch.y.device)

    def erm_step(self, batch: Batch) -> Tensor:
        """Mean cross-entropy on the batch."""
        return self.cross_entropy(self(batch.x), batch.y).mean()

    def cross_entropy(self, logits: Tensor, y: Tensor) -> Tensor:
        """Per-sample cross-entropy; its mean and the accuracy are tracked for the epoch's training log."""
        losses = F.cross_entropy(logits, y, reduction="none")
        self.tally_train(losses.mean(), logits, y)
        return losses

    def tally_train(self, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        """Add a batch's summed loss and correct predictions to on-device sums, logged once per epoch as
        `train/loss` and `train/acc`: no per-step `self.log`, whose bookkeeping is a noticeable share of a
        small step."""
        batch = torch.stack([loss.detach() * len(y), (logits.detach().argmax(1) == y).sum().to(loss.dtype)])
        self.train_sums = batch if self.train_sums is None else self.train_sums + batch
        self.train_count += len(y)

    def on_train_epoch_start(self) -> None:
        self.train_sums, self.train_count = None, 0

    def on_train_epoch_end(self) -> None:
        self.epochs_done += 1
        if self.train_sums is not None:
            loss, acc = (self.train_sums / self.train_count).tolist()
            self.train_curve.append((loss, acc))
            self.log_dict({"train/loss": loss, "train/acc": acc})

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> int | None:
        # With `head_solver: lbfgs` the epoch's first batch fits the head on all the training data instead, and -1
        # tells Lightning to skip the epoch's Adam steps.
        if self.hparams.head_solver != "lbfgs":
            return None
        self.fit_head()
        return -1

    def fit_head(self) -> None:
        """Fit the linear head to convergence by L-BFGS on the fixed features of the data the method trains on
        (`env.train_data`: ReSample's subsample), weighted by `sample_weights`; its loss and accuracy become the
        epoch's `train/loss` and `train/acc`, its convergence record `head_fit`."""
        env, (body, head) = self.env, body_and_head(self.net)
        data = env.train_data
        f, y, _ = features(body, env, data, self.device)
        fit = fit_head_lbfgs(head, f.to(self.device), y.to(self.device), self.sample_weights(data).to(self.device),
                             self.hparams.weight_decay)
        self.head_fit = fit.record(self.hparams.weight_decay)
        n = len(y)
        self.train_sums = torch.tensor([fit.train_loss * n, fit.train_acc * n])
        self.train_count = n
        self.samples_seen += n

    def on_train_batch_end(self, outputs: object, batch: Batch, batch_idx: int) -> None:
        self.samples_seen += len(batch.y)

    def on_fit_end(self) -> None:
        # A regime that served its own training data (a phase, DAgger's pool) hands the environment back as it was.
        self.env.served = None

    def split_epochs(self) -> int:
        """The trainer's epochs per stage (a regime's phases or rounds, `stages`), split evenly; Lightning then asks
        the environment for training data again at each stage's start, so that it picks up what `env.served`."""
        per_stage = self.epochs_per_stage(self.trainer)
        reload_train_data_every(self.trainer, per_stage)
        return per_stage

    @property
    def total_samples(self) -> int:
        """Training samples seen so far, over all ranks."""
        return self.samples_seen * self.trainer.world_size

    # Evaluation: validation and test share one path; only the test stage runs interventions and the probe.
    def _start(self, stage: str) -> None:
        env = self.env
        # The probe's head is fit on the frozen features once, before testing; each test batch's features then
        # go through both heads, so the probe costs no extra forward pass or rendered intervention.
        ids = env.names("id")  # the probe fits on their validation samples; a plug-in may give none
        probing = stage == "test" and self.hparams.probe and bool(ids) and all(n in env.val_data for n in ids)
        self.probe_head = heldout_head(self.net, env).head if probing else None
        self.tallies = {n: torch.zeros(1 + probing, tally_size(env.n_groups), dtype=torch.double, device=self.device)
                        for n in env.eval_names(stage)}
        self._cf_gen = torch.Generator().manual_seed(0)

    def predict(self, x: Tensor) -> list[Tensor]:
        """The model's logits, and while a probe is fit, the probe head's on the same features."""
        if self.probe_head is None:
            return [self(x)]
        return self.heads(self.net[:-1](x))

    def heads(self, f: Tensor) -> list[Tensor]:
        """The logits of the model's head, and while a probe is fit the probe head's, on penultimate features `f`."""
        return [self.net[-1](f), *([] if self.probe_head is None else [self.probe_head(f)])]

    def score(self, env: ShiftedEnv, batch: Batch, cf_gen: torch.Generator | None = None) -> Tensor:
        """The tallies `[heads, ...]` of one batch of `env` (`testbed.training.metrics.score`)."""
        return score(self.predict, env, batch, cf_gen)

    def tally_env(self, env: ShiftedEnv, name: str, split: Split = "test",
                  cf_gen: torch.Generator | None = None) -> Tensor:
        """The tally of one sub-environment's validation or test samples, outside Lightning's loops."""
        return self.tally_data(env, env.eval_data(name, self, split), cf_gen)

    def tally_data(self, env: ShiftedEnv, data: Batch, cf_gen: torch.Generator | None = None) -> Tensor:
        """The tally of samples `data` of `env`, outside Lightning's loops."""
        batches = (env.on_after_batch_transfer(Batch(*(t.to(self.device) for t in batch)), 0)  # as Lightning would
                   for batch in TensorLoader(data, env.eval_batch_size))
        return sum(self.score(env, batch, cf_gen) for batch in batches)

    @torch.no_grad()
    def evaluate(self, env: ShiftedEnv, role: str = "id", counterfactual: bool = True) -> dict[str, float]:
        """Metrics of `env`'s sub-environments of one role pooled, with the role's group weights as the test pass
        applies them (`summary`), outside Lightning's loops: how regimes score environments other than the
        datamodule's (phases) or score it mid-epoch (streams)."""
        training, gen = self.training, torch.Generator().manual_seed(0) if counterfactual else None
        self.eval()
        total = sum(self.tally_env(env, name, "test", gen)[0] for name in env.names(role))
        self.train(training)
        return env_metrics(total, env.interventions if counterfactual else (), env.role_weights().get(role))

    @torch.no_grad()
    def final_val(self) -> dict[str, float]:
        """The final model's `val/...` metrics on the environment's validation samples (disjoint from its test
        samples), scored once after training, on this process alone: what selection rules read, whether or not
        validation ran during training. Empty if the environment gives no validation samples."""
        env, training = self.env, self.training
        names = env.eval_names("val")
        self.eval()
        tallies = self.val_tallies(env, names)
        self.train(training)
        return self.summary("val", {n: t[None] for n, t in tallies.items()})

    def val_tallies(self, env: ShiftedEnv, names: list[str]) -> dict[str, Tensor]:
        """The final model's tally of each named sub-environment's validation samples (`final_val`); a baseline
        that fit part of its model on validation samples scores others instead (DFR)."""
        return {name: self.tally_env(env, name, "val")[0] for name in names}

    def _step(self, stage: str, batch: Batch, dataloader_idx: int) -> None:
        env = self.env
        name = env.eval_names(stage)[dataloader_idx]
        self.tallies[name] += self.score(env, batch, self._cf_gen if stage == "test" else None)

    def summary(self, stage: str, tallies: dict[str, Tensor]) -> dict[str, float]:
        """The metrics of each sub-environment's tally `[heads, ...]` (the model's head, then the probe's): the one
        summary of the test pass, validation during training and `final_val`, with the environment's role weights
        (WILDS' adjusted averages) in each, and the interventions on test samples only."""
        env = self.env
        roles = {s.name: s.role for s in env.specs}
        interventions, weights = env.interventions if stage == "test" else (), env.role_weights()
        heads = len(next(iter(tallies.values()))) if tallies else 1
        metrics: dict[str, float] = {}
        for head, prefix in enumerate((stage, "probe")[:heads]):
            metrics |= summarize(prefix, {n: t[head] for n, t in tallies.items()}, roles, interventions, weights)
        return metrics | {f"{stage}/{k}": v for k, v in env.deployment_metrics(list(tallies)).items()}

    def _end(self, stage: str) -> dict[str, float]:
        tallies = {n: self.trainer.strategy.reduce(t, reduce_op="sum") for n, t in self.tallies.items()}
        metrics = self.summary(stage, tallies)
        self.probe_head = None
        if stage == "val":  # through `self.log`, where callbacks (checkpoints, early stopping) can monitor them
            self.log_dict(metrics, rank_zero_only=True)
        else:  # straight to the loggers: 30-odd `self.log` calls cost about 20 ms, more than a tiny run's test
            for logger in self.loggers:
                logger.log_metrics({**metrics, "epoch": self.current_epoch}, step=self.global_step)
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._start("val")

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step("val", batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._end("val")

    def on_test_epoch_start(self) -> None:
        self._start("test")

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step("test", batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self.results = self._end("test")

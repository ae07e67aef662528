"""What every shifted environment shares.

An environment is a LightningDataModule over named sub-environments (domains), each with its own
spurious correlation `corr = P(a matches y)` and a role: `train` (training domains), `id` (held-out
samples of the training distributions) or `ood` (shifted domains). Every batch is a `Batch(x, y, a, e, z)`;
the group of a sample is `g = y * n_attr + a` (`n_attr` is `n_classes` unless an environment says otherwise).
"""

import inspect
import json
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import lightning as L
import torch
from torch import Tensor, nn

from testbed.errors import ConfigError, check_positive, check_unit

Role = Literal["train", "id", "ood"]
# Which samples of a sub-environment `make` returns: a training environment's ("train"), or a held-out one's
# validation samples ("val", for selection and early stopping) or test samples ("test"), drawn apart.
Split = Literal["train", "val", "test"]


class Batch(NamedTuple):
    x: Tensor  # inputs
    y: Tensor  # label, possibly noisy
    a: Tensor  # spurious attribute, in [0, n_classes)
    e: Tensor  # index of the sub-environment the sample came from (for IRM, VREx, GroupDRO)
    z: Tensor  # latents the environment needs to render the sample again (see `intervene`)


@dataclass(frozen=True)
class EnvSpec:
    """One named sub-environment: its role and its spurious correlation."""

    role: Role
    corr: float

    @property
    def name(self) -> str:
        return f"{self.role}:corr={self.corr:.2f}"


def agreement(specs: list["EnvSpec"], p_break: float, n_attr: int) -> float:
    """How often the attribute equals the label in training, over equal-sized training environments whose
    attribute agrees with the label with probability `corr`, except a share `p_break` drawn uniformly: the
    accuracy of predicting the label from the attribute alone."""
    corrs = [s.corr for s in specs if s.role == "train"]
    return round(sum((1 - p_break) * c + p_break / n_attr for c in corrs) / len(corrs), 10)  # 0.85, not 0.85000001


def corr_specs(train_corrs: tuple[float, ...], val_corrs: tuple[float, ...] | None,
               test_corrs: tuple[float, ...]) -> list[EnvSpec]:
    """Sub-environments from a correlation per environment and role; held-out ones default to training's."""
    val_corrs = train_corrs if val_corrs is None else val_corrs
    for field, corrs in [("train_corrs", train_corrs), ("val_corrs", val_corrs), ("test_corrs", test_corrs)]:
        check_unit(field, corrs)
    return ([EnvSpec("train", c) for c in train_corrs] + [EnvSpec("id", c) for c in val_corrs]
            + [EnvSpec("ood", c) for c in test_corrs])


def concat(batches: list[Batch]) -> Batch:
    return batches[0] if len(batches) == 1 else Batch(*(torch.cat(parts) for parts in zip(*batches)))


def shuffle_seed(seed: int, epoch: int) -> int:
    """The seed of one training pass's order: a hash of (seed, epoch), so that no two (seed, epoch) pairs share an
    order (with `seed + epoch`, seed s + 1 at epoch e replayed seed s at epoch e + 1, correlating the seeds that the
    intervals treat as independent)."""
    return zlib.crc32(f"shuffle/{seed}/{epoch}".encode())


class TensorLoader:
    """Yields slices of an in-memory `Batch`: no workers, no per-sample collation.

    Under distributed evaluation each rank takes a contiguous shard, so every sample is seen exactly once.
    Training shards drop the remainder so that every rank runs the same number of steps.
    """

    def __init__(self, data: Batch, batch_size: int, shuffle: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.data, self.batch_size, self.shuffle, self.seed = data, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        n = len(data.y)
        per_rank = n // world_size if shuffle else -(-n // world_size)
        lo = min(rank * per_rank, n)
        self.lo, self.hi = lo, min(lo + per_rank, n)

    def __len__(self) -> int:
        return -(-(self.hi - self.lo) // self.batch_size)

    def indices(self) -> Iterator[Tensor | slice]:
        """The rows of each batch of the next pass, in order: the one place that fixes the data order
        (packed training replays it for each packed model)."""
        if self.shuffle:
            n = len(self.data.y)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(shuffle_seed(self.seed, self.epoch)))
            self.epoch += 1
            index = order[self.lo:self.hi].to(self.data.y.device)
            for i in range(0, len(index), self.batch_size):
                yield index[i:i + self.batch_size]
        else:
            for i in range(self.lo, self.hi, self.batch_size):
                yield slice(i, min(i + self.batch_size, self.hi))

    def __iter__(self) -> Iterator[Batch]:
        for rows in self.indices():
            if isinstance(rows, slice):
                yield Batch(*(t[rows] for t in self.data))
            else:  # a gather: index_select is about twice as fast as advanced indexing `t[rows]` on a CPU
                yield Batch(*(torch.index_select(t, 0, rows) for t in self.data))


def init_arguments(cls: type, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The arguments of `cls(*args, **kwargs)` by name (None where `*args` took some: they have no names)."""
    bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs).arguments
    params = inspect.signature(cls.__init__).parameters
    named = {}
    for key, value in list(bound.items())[1:]:
        kind = params[key].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                return None
        elif kind is inspect.Parameter.VAR_KEYWORD:
            named |= value
        else:
            named[key] = value
    return named


def knob_names(cls: type) -> list[str]:
    """The named init arguments of `cls`, and of its bases where its `__init__` passes `**kwargs` on."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]
        names += [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params) or klass is ShiftedEnv:
            break
    return names


class ShiftedEnv(L.LightningDataModule):
    """Base class of every environment. Subclasses set `n_classes`, `input_shape`, `specs` and implement
    `make`; environments that can render from latents also implement `intervene` and `causal`."""

    n_classes: int
    input_shape: tuple[int, ...]
    vocab_size: int | None = None  # token environments: inputs are ids in [0, vocab_size), 0 pads; None: images
    specs: list[EnvSpec]
    # Which factors `intervene` can set: "a" (the spurious attribute) and/or "causal" (the causal class).
    interventions: tuple[str, ...] = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> "ShiftedEnv":
        # Capture the init arguments of every environment, plug-ins included, so that `variant` can rebuild it
        # with some changed; no subclass has to remember to save them. (Unpickling calls `__new__` bare.)
        self = super().__new__(cls)
        self.init_args = init_arguments(cls, args, kwargs) if args or kwargs else {}
        self.changes = {}  # what `variant` changed from the environment as configured: it salts the seeds
        return self

    def __init__(self, batch_size: int = 256, eval_batch_size: int = 1024, seed: int = 0) -> None:
        super().__init__()
        check_positive("batch_size", batch_size)
        check_positive("eval_batch_size", eval_batch_size)
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.data: dict[str, Batch] = {}  # every sub-environment's training or test samples
        self.val_data: dict[str, Batch] = {}  # each `id` and `ood` sub-environment's validation samples
        # Training data a regime serves in place of the training environments (a phase of ContinualFinetune);
        # Lightning picks it up when it next asks for `train_dataloader`.
        self.served: Batch | None = None
        self._pooled: Batch | None = None

    @property
    def n_attr(self) -> int:
        """Number of values of the spurious attribute; by default one per class, so `a` can match `y`."""
        return self.n_classes

    @property
    def n_groups(self) -> int:
        return self.n_classes * self.n_attr

    def group(self, batch: Batch) -> Tensor:
        """The group of each sample, `g = y * n_attr + a`: one per (label, attribute) pair."""
        return batch.y * self.n_attr + batch.a

    def role_weights(self) -> dict[str, Tensor]:
        """Per role, the group frequencies that the accuracy of its sub-environments stands for, where their
        samples are drawn otherwise (e.g. a group-balanced held-out split standing for the training
        distribution); roles not given are scored as sampled."""
        return {}

    def check_specs(self) -> None:
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"environments: duplicate correlation within a role in {names}")
        for role in ("train", "ood"):
            if not any(s.role == role for s in self.specs):
                raise ConfigError(f"environments: at least one '{role}' environment is required")

    def variant(self, **changes: Any) -> "ShiftedEnv":
        """The same environment with some init arguments changed (another correlation, another spurious
        feature): a new phase or a future shift. Its sub-environments draw other samples than this one's, even
        where their names are the same (a new spurious feature): a phase is new data."""
        name = type(self).__name__
        if self.init_args is None:
            raise ConfigError(f"{name} cannot be varied: its __init__ takes *args, so its arguments have no names")
        knobs = knob_names(type(self))
        unknown = sorted(set(changes) - set(knobs))
        if unknown:
            raise ConfigError(f"{name} has no knob {unknown[0]!r} to vary; it has {', '.join(knobs) or 'none'}")
        env = type(self)(**{**self.init_args, **changes})
        env.changes = {**self.changes, **changes}
        return env

    @property
    def ceiling(self) -> float | None:
        """The invariant ceiling: the best accuracy a model that ignores the spurious attribute can reach on the
        shifted data, where the environment knows it; None where it does not."""
        return None

    @property
    def spurious_accuracy(self) -> float | None:
        """The training accuracy of the best predictor that reads only the spurious attribute, where the environment
        knows it; None where it does not. Beside `ceiling` it tells a positive control (the attribute predicts
        better than the causal feature: `testbed.analysis.endpoints.positive_control`)."""
        return None

    def generator(self, spec: EnvSpec, split: Split) -> torch.Generator:
        """A generator seeded by the seed, the sub-environment's name, the split and what `variant` changed:
        adding or reordering sub-environments never changes another one's samples, validation samples are drawn
        apart from test samples, and a variant's samples apart from the original's."""
        salt = json.dumps(self.changes, sort_keys=True, default=str) if self.changes else ""
        return torch.Generator().manual_seed(zlib.crc32(f"{self.seed}/{spec.name}/{split}/{salt}".encode()))

    def make(self, spec: EnvSpec, index: int, split: Split) -> Batch:
        """Generate or load the samples of one sub-environment; `index` is its position in `specs`. Held-out
        (`id`, `ood`) sub-environments are asked for their `val` and their `test` samples, which must be
        disjoint; training ones for their `train` samples."""
        raise NotImplementedError

    def gives_val(self) -> bool:
        """Whether `make` takes a `split` argument, i.e. can give validation samples apart from test samples."""
        return "split" in inspect.signature(self.make).parameters

    def intervene(self, batch: Batch, a: Tensor | None = None, causal: Tensor | None = None) -> Tensor:
        """Render the same samples with the spurious attribute and/or the causal class replaced: do(a=v)."""
        raise NotImplementedError(f"{type(self).__name__} cannot render interventions")

    def causal(self, batch: Batch) -> Tensor:
        """The causal class of each sample (before label noise)."""
        raise NotImplementedError(f"{type(self).__name__} has no causal latent")

    def eval_data(self, name: str, model: nn.Module, split: Split = "test") -> Batch:
        """The samples of sub-environment `name` to score `model` on (its validation or its test samples):
        fixed data, except in a closed-loop environment, where they are the states `model` visits when it acts
        (`testbed.envs.braking`)."""
        return (self.val_data if split == "val" else self.data)[name]

    def retraining_data(self, name: str) -> Batch:
        """The held-out samples of `id` sub-environment `name` that last-layer retraining (`DFR`) fits its head on:
        its validation samples, so that its test samples stay out of sample."""
        return self.val_data[name]

    def deployment_metrics(self, names: list[str]) -> dict[str, float]:
        """Closed-loop metrics beyond accuracy (return, crash rate) of the last `eval_data` of these
        sub-environments; none here."""
        return {}

    def setup(self, stage: str | None = None) -> None:
        if self.data:
            return
        if not self.gives_val():  # a plug-in written before validation samples were asked for
            warnings.warn(f"{type(self).__name__}.make takes no `split` argument, so it gives no validation samples "
                          "apart from its test samples: no val/... metrics are computed for it (see the README, "
                          "'Add your own shifted dataset')", stacklevel=2)
            self.data = {s.name: self.make(s, i) for i, s in enumerate(self.specs)}
            return
        self.data = {s.name: self.make(s, i, "train" if s.role == "train" else "test")
                     for i, s in enumerate(self.specs)}
        self.val_data = {s.name: self.make(s, i, "val") for i, s in enumerate(self.specs) if s.role != "train"}

    def names(self, *roles: Role) -> list[str]:
        return [s.name for s in self.specs if s.role in roles]

    @property
    def train_data(self) -> Batch:
        """The training environments pooled (or the data a regime serves). Pooled once and kept: a copy of every
        training sample, which each `fit` and each reload of the training data would otherwise make again."""
        if self.served is not None:
            return self.served
        if self._pooled is None:
            self._pooled = concat([self.data[n] for n in self.names("train")])
        return self._pooled

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def on_device(self, data: Batch) -> Batch:
        """`data` moved once to the trainer's device, so that every batch is a slice of device memory
        (no per-step host-to-device copy); a no-op on the CPU."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        return Batch(*(t.to(device) for t in data))

    def train_dataloader(self) -> TensorLoader:
        rank, world = self._rank()
        return TensorLoader(self.on_device(self.train_data), self.batch_size, shuffle=True, seed=self.seed,
                            rank=rank, world_size=world)

    def eval_loaders(self, names: list[str], split: Split) -> list[TensorLoader]:
        rank, world = self._rank()
        model = self.trainer.lightning_module if self.trainer is not None else None
        return [TensorLoader(self.on_device(self.eval_data(n, model, split)), self.eval_batch_size, rank=rank,
                             world_size=world) for n in names]

    def eval_names(self, stage: str) -> list[str]:
        """Validation scores the validation samples of the held-out and shifted environments (none if the
        environment gives none); testing scores the test samples of those and the training data."""
        if stage == "val":
            return self.names("id", "ood") if self.val_data else []
        return self.names("train", "id", "ood")

    def val_dataloader(self) -> list[TensorLoader]:
        return self.eval_loaders(self.eval_names("val"), "val")

    def test_dataloader(self) -> list[TensorLoader]:
        return self.eval_loaders(self.eval_names("test"), "test")

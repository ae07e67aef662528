"""GroupDRO: distributionally robust optimisation over groups (Sagawa et al. 2020, "Distributionally robust neural
networks for group shifts"; peer code kohpangwei/group_DRO `loss.py`, WILDS `algorithms/groupDRO.py`)."""

from typing import Literal

import torch
from torch import Tensor

from testbed.baselines.balance import inverse_frequency
from testbed.envs.base import Batch, ShiftedEnv
from testbed.errors import ConfigError, check_choice, check_positive
from testbed.hparams import Range
from testbed.training.compat import reload_train_data_every
from testbed.training.module import Baseline

Sampling = Literal["natural", "balanced"]


def group_adjustment(env: ShiftedEnv, c: float) -> Tensor:
    """Sagawa et al.'s generalisation adjustment C / sqrt(n_g) for each group g, with n_g its training samples (0
    for a group absent from training, whose risk is never seen): added to the groups' risks in the q update, so
    that small groups, whose training risk understates their test risk most, gain weight sooner."""
    counts = torch.bincount(env.group(env.train_data), minlength=env.n_groups).double()
    return torch.where(counts > 0, c / counts.clamp(min=1).sqrt(), 0.0).float()


def dro_loss(q: Tensor, losses: Tensor, groups: Tensor, eta: Tensor | float, adjustment: Tensor) -> Tensor:
    """One step of GroupDRO's online mirror ascent, for one model or N packed ones at once: `q` `[..., G]` (updated
    in place), per-sample `losses` and their `groups` `[..., B]`, `eta` a float or `[..., 1]`, `adjustment`
    `[..., G]`. Each group's risk is its mean loss in the batch (0 for a group absent from it, as in Sagawa et al.'s
    `compute_group_avg`); q_g <- q_g exp(eta (risk_g + adjustment_g)), normalised; the loss is sum_g q_g risk_g."""
    sums = torch.zeros_like(q).scatter_add_(-1, groups, losses)
    counts = torch.zeros_like(q).scatter_add_(-1, groups, torch.ones_like(losses))
    risks = sums / counts.clamp(min=1)
    q.mul_(torch.exp(eta * (risks.detach() + adjustment)))
    q.div_(q.sum(-1, keepdim=True))
    return (q * risks).sum(-1)


class GroupDRO(Baseline):
    """Minimise the worst group's risk by online mirror ascent on group weights q (`dro_loss`). Groups are
    g = y * n_attr + a, so the rare groups where the attribute disagrees with the label gain weight.

    Sagawa et al. find that this needs strong regularisation: an overparameterised model fits every training group,
    so the worst group's training risk goes to 0 and GroupDRO reduces to ERM unless an L2 penalty (their weight
    decay 0.1 on CelebA, 1.0 on Waterbirds) or early stopping keeps the training risks apart. `weight_decay` is
    Adam's coupled weight decay, i.e. the penalty (weight_decay / 2) |theta|^2 in the objective, the same term as
    their SGD weight decay; its tunable range reaches 1.0.

    Args:
        eta: step size of the group weights (Sagawa et al. 2020 and DomainBed use 0.01).
        adjustment: the generalisation adjustment C of Sagawa et al. (their `--generalization_adjustment`; they tune
            C in {0, 1, 2, 3, 4, 5}); 0 turns it off.
        sampling: `natural`, batches drawn from the training data as it is (SubpopBench's GroupDRO, the one the
            README's tables compare), or `balanced`, every epoch a fresh draw of as many samples with replacement
            and equal probability for each group (WILDS' `uniform_over_groups`; Sagawa et al.'s `--reweight_groups`).
    """

    q: Tensor  # group weights: a buffer, so checkpoints keep them and a resumed fit goes on from them

    # eta: DomainBed's and SubpopBench's 10^U(-3, -1); adjustment: Sagawa et al.'s 0 to 5; weight_decay up to their
    # strongest L2 (1.0), from DomainBed's lower end.
    tunable = {**Baseline.tunable, "weight_decay": Range(1e-6, 1.0, log=True), "eta": Range(1e-3, 1e-1, log=True),
               "adjustment": Range(0.0, 5.0)}

    def __init__(self, eta: float = 0.01, adjustment: float = 0.0, sampling: Sampling = "natural",
                 **kwargs) -> None:
        super().__init__(**kwargs)
        check_positive("eta", eta)
        if adjustment < 0:
            raise ConfigError(f"adjustment: {adjustment} is not allowed; it must be >= 0")
        check_choice("sampling", sampling, ("natural", "balanced"))
        # Empty until fitting starts, when the environment's number of groups is known; a checkpoint's weights
        # replace it whatever their size.
        self.register_buffer("q", torch.empty(0))
        self.register_load_state_dict_pre_hook(self.fit_q)
        self.adjust: Tensor | None = None  # C / sqrt(n_g) of each group, set when fitting starts
        # Balanced sampling: the training data as the environment gives it, each sample's draw weight, and the
        # generator of the epochs' draws (seeded by the data seed), set when fitting starts.
        self.natural: Batch | None = None
        self.draw_weights: Tensor | None = None
        self.draws: torch.Generator | None = None

    def fit_q(self, module: object, state: dict, prefix: str, *args: object) -> None:
        if prefix + "q" in state:
            self.q = torch.empty_like(state[prefix + "q"], device=self.q.device)

    def start(self, env: ShiftedEnv) -> None:
        """Set up the group weights (uniform, unless a checkpoint gave them) and the adjustment for `env`'s
        training data: what a sequential fit and a packed one (`testbed.run.packed_methods`) both start from."""
        if len(self.q) != env.n_groups:  # a fresh fit (a resumed one has its checkpoint's weights)
            self.q = torch.full((env.n_groups,), 1.0 / env.n_groups, device=self.q.device)
        self.adjust = group_adjustment(env, self.hparams.adjustment).to(self.q.device)

    def on_fit_start(self) -> None:
        self.start(self.env)
        if self.hparams.sampling == "balanced":
            # WILDS and Sagawa et al. weight each sample 1 / n_g and draw n with replacement every epoch: here the
            # inverse group frequencies, and a fresh draw served at each epoch's start.
            data = self.env.train_data
            self.natural = data
            self.draw_weights = inverse_frequency("group", self.env)[self.env.group(data)]
            self.draws = torch.Generator().manual_seed(self.env.seed)
            reload_train_data_every(self.trainer, 1)
            self.serve_balanced()

    def serve_balanced(self) -> None:
        """Serve a draw of as many training samples as there are, with replacement, each group equally likely."""
        rows = torch.multinomial(self.draw_weights, len(self.draw_weights), replacement=True,
                                 generator=self.draws).to(self.natural.y.device)
        self.env.served = Batch(*(t[rows] for t in self.natural))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.hparams.sampling == "balanced":
            self.serve_balanced()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        losses = self.cross_entropy(self(batch.x), batch.y)
        return dro_loss(self.q, losses, self.env.group(batch), self.hparams.eta, self.adjust)

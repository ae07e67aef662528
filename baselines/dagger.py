"""DAgger: online training in the deployment environment, where the learner acts and the expert labels."""

import torch
from torch import Tensor

from testbed.envs.base import Batch, ShiftedEnv, concat
from testbed.errors import ConfigError, check_positive, check_unit
from testbed.training.module import Baseline


class DAgger(Baseline):
    """Dataset aggregation (Ross et al. 2011, "A Reduction of Imitation Learning and Structured Prediction to
    No-Regret Online Learning"), with the learner driving alone (their beta = 0 after the first round).

    The first round is behaviour cloning on the environment's demonstrations. After each round the learner
    drives `episodes` episodes itself; a `fraction` of the states it visited (drawn at random), labelled with the
    expert's action, joins the training data, and the next round trains on everything gathered so far, from the
    current weights. The trainer's epochs are split evenly over the rounds. `fraction: 1` is DAgger as published
    (the expert labels every visited state); `fraction: 0` asks the expert nothing: behaviour cloning for as many
    epochs. The expert's labels are the online signal a dose-response counts (`expert_labels`). With
    `intervene > 0`, that share of the labelled states also has its nuisance redrawn uniformly, do(a ~ U), before
    it joins: DAgger with interventions.

    After each round the policy drives the deployment's test episodes (`deploy`): the online curve records its
    return and crashes against the expert labels it has trained on, from which the report resolves the labels
    needed to reach a share of masked cloning's (the Oracle's) return.

    Needs a closed-loop environment: one with `visit(model, episodes, seed)` and `deploy(model)` (e.g. `Braking`).

    Args:
        rounds: training rounds, the first on the demonstrations only.
        episodes: episodes the learner drives after each round.
        fraction: share of the visited states the expert labels (and that join the training data).
        intervene: share of the labelled states whose nuisance is intervened on.
    """

    def __init__(self, rounds: int = 6, episodes: int = 50, fraction: float = 1.0, intervene: float = 0.0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        check_positive("rounds", rounds)
        check_positive("episodes", episodes)
        check_unit("fraction", fraction)
        check_unit("intervene", intervene)
        self.curve: list[dict[str, float]] = []
        self.labels = 0

    def check_env(self, env: ShiftedEnv) -> None:
        if not hasattr(env, "visit") or not hasattr(env, "deploy"):
            raise ConfigError(f"model: DAgger needs a closed-loop environment that the learner can act in, such as "
                              f"Braking; {type(env).__name__} is not one")
        if self.hparams.intervene > 0 and "a" not in env.interventions:
            raise ConfigError(f"model.intervene: {type(env).__name__} cannot intervene on its nuisance; use 0")

    def extra_results(self) -> dict[str, object]:
        h = self.hparams
        return {"dagger": {"fraction": h.fraction, "intervene": h.intervene, "expert_labels": self.labels,
                           "curve": self.curve}}

    def stages(self) -> tuple[int, str]:
        return self.hparams.rounds, "rounds"

    def on_fit_start(self) -> None:
        self.epochs_per_round = self.split_epochs()
        self.pool, self.curve, self.labels = self.env.train_data, [], 0

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.erm_step(batch)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if (self.current_epoch + 1) % self.epochs_per_round:
            return
        done = (self.current_epoch + 1) // self.epochs_per_round
        # The policy after `done` rounds, on the deployment's episodes, against the labels it trained on.
        self.curve.append({"rounds": done, "samples": self.total_samples, "expert_labels": self.labels,
                           **self.env.deploy(self)})
        if done < self.hparams.rounds:
            self.aggregate(done)

    def aggregate(self, k: int) -> None:
        """The learner drives; the expert labels a `fraction` of the states it visited, which join the data."""
        env, h = self.env, self.hparams
        if h.fraction == 0:
            return  # nothing would be labelled: behaviour cloning goes on
        visited, _ = env.visit(self, h.episodes, seed=env.seed * 1_000 + k)
        gen = torch.Generator().manual_seed(env.seed * 1_000 + k)  # each seed labels and intervenes on other states
        labelled = torch.randperm(len(visited.y), generator=gen)[:round(h.fraction * len(visited.y))]
        visited = Batch(*(t[labelled] for t in visited))
        n = round(h.intervene * len(visited.y))
        if n:
            chosen = torch.randperm(len(visited.y), generator=gen)[:n]
            a = visited.a.clone()
            a[chosen] = torch.randint(env.n_attr, (n,), generator=gen)
            visited = visited._replace(x=env.intervene(visited._replace(a=a)), a=a)
        self.pool, self.labels = concat([self.pool, visited]), self.labels + len(visited.y)
        env.served = self.pool

"""DAgger: online training in the deployment environment, where the learner acts and the expert labels."""

import torch
from torch import Tensor

from testbed.envs.base import Batch, ShiftedEnv, concat
from testbed.errors import ConfigError, check_positive, check_unit
from testbed.module import Baseline


class DAgger(Baseline):
    """Dataset aggregation (Ross et al. 2011, "A Reduction of Imitation Learning and Structured Prediction to
    No-Regret Online Learning"), with the learner driving alone (their beta = 0 after the first round).

    The first round is behaviour cloning on the environment's demonstrations. After each round the learner
    drives `episodes` episodes itself; every state it visited, labelled with the expert's action, joins the
    training data, and the next round trains on everything gathered so far, from the current weights. The
    trainer's epochs are split evenly over the rounds. With `fraction > 0`, that share of the visited states
    also has its nuisance redrawn uniformly, do(a ~ U), before it joins: DAgger with interventions.

    Needs a closed-loop environment: one with `visit(model, episodes, seed)` (e.g. `Braking`).

    Args:
        rounds: training rounds, the first on the demonstrations only.
        episodes: episodes the learner drives after each round.
        fraction: share of the visited states whose nuisance is intervened on.
    """

    def __init__(self, rounds: int = 6, episodes: int = 50, fraction: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        check_positive("rounds", rounds)
        check_positive("episodes", episodes)
        check_unit("fraction", fraction)
        self.curve: list[dict[str, float]] = []

    def check_env(self, env: ShiftedEnv) -> None:
        if not hasattr(env, "visit"):
            raise ConfigError(f"model: DAgger needs a closed-loop environment that the learner can act in, such as "
                              f"Braking; {type(env).__name__} is not one")
        if self.hparams.fraction > 0 and "a" not in env.interventions:
            raise ConfigError(f"model.fraction: {type(env).__name__} cannot intervene on its nuisance; use 0")

    def extra_results(self) -> dict[str, object]:
        return {"dagger": {"curve": self.curve}}

    def on_fit_start(self) -> None:
        self.epochs_per_round = self.split_epochs(self.hparams.rounds, "rounds")
        self.pool, self.curve, self.labels = self.env.train_data, [], 0

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.erm_step(batch)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        done = (self.current_epoch + 1) // self.epochs_per_round
        if (self.current_epoch + 1) % self.epochs_per_round == 0 and done < self.hparams.rounds:
            self.aggregate(done)

    def aggregate(self, k: int) -> None:
        """The learner drives; the states it visited, with the expert's labels, join the training data."""
        env = self.env
        visited, outcome = env.visit(self, self.hparams.episodes, seed=env.seed * 1_000 + k)
        n = round(self.hparams.fraction * len(visited.y))
        if n:
            gen = torch.Generator().manual_seed(env.seed * 1_000 + k)  # each seed intervenes on other states
            chosen = torch.randperm(len(visited.y), generator=gen)[:n]
            a = visited.a.clone()
            a[chosen] = torch.randint(env.n_attr, (n,), generator=gen)
            visited = visited._replace(x=env.intervene(visited._replace(a=a)), a=a)
        self.pool, self.labels = concat([self.pool, visited]), self.labels + len(visited.y)
        env.served = self.pool
        # The policy after k rounds, as it drove this rollout: the online curve.
        self.curve.append({"rounds": k, "samples": self.total_samples, "expert_labels": self.labels, **outcome})

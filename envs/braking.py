"""Braking: imitation of the braking task's expert (envs/road.py) as a shifted environment.

Sub-environments: `train:corr=c`, the expert's demonstrations (`n_demos` episodes); `id:corr=c`, held-out
demonstrations; and `ood:closed_loop`, the deployment: the states the policy being scored visits when it
drives `n_eval` episodes itself, each labelled with the expert's action. `c` is the expert's probability of
repeating its previous action, i.e. of agreeing with the brake light. A sample is `Batch(x, y, a, e, z)` with
`y` the expert's action, `a` the brake light (the nuisance), and `z` the sensed distance, from which
`intervene(a=...)` renders the same state with the light toggled.

So the usual metrics read as the control setting's: `acc_id` is offline action accuracy, `acc_avg` the
action accuracy on the policy's own states, `spurious_reliance` the rate at which the action flips when the
light is toggled; the closed loop adds `return`, `return_norm` (the return over the expert's on the same
episodes) and `crash_rate` (crashes per episode). Behaviour cloning is `ERM`, masked-nuisance cloning is
`Oracle` (the light drawn at random in training, so it carries no information), online training is `DAgger`.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from testbed.envs.base import Batch, EnvSpec, ShiftedEnv, Split
from testbed.envs.road import Observation, Road, Trajectories
from testbed.errors import check_positive

CHUNK = 16  # demonstrations are generated in seeded blocks of episodes, so a larger n_demos extends a smaller one
# Held-out and deployment episodes are the same for every run; their validation episodes are other episodes.
ID_SEED, EVAL_SEED, VAL_ID_SEED, VAL_EVAL_SEED = 1_000_003, 2_000_003, 3_000_003, 4_000_003


@dataclass(frozen=True)
class ClosedLoop(EnvSpec):
    """The deployment sub-environment: its states, and their agreement with the light, depend on the policy."""

    @property
    def name(self) -> str:
        return f"{self.role}:closed_loop"


class Braking(ShiftedEnv):
    """Imitating a braking expert whose brake light the learner sees (de Haan et al. 2019's causal confusion).

    Args:
        n_demos: expert episodes to learn from (the data-size knob).
        n_val: held-out expert episodes (test), and as many other ones for validation; validation also lets the
            policy drive `n_val` episodes of its own, other than the test's.
        n_eval: episodes the policy drives at test.
        max_dist, safe_dist, persistence, noise, saliency, crash_cost, horizon, observation, image_size: the
            task's knobs (`testbed.envs.road.Road`): `saliency` is the nuisance's salience, `persistence` how
            strongly consecutive expert actions correlate, `observation` vector or small image.
    """

    n_classes = 2
    interventions = ("a",)

    def __init__(self, n_demos: int = 50, n_val: int = 20, n_eval: int = 100, max_dist: int = 25, safe_dist: int = 4,
                 persistence: float = 0.9, noise: float = 3.0, saliency: float = 1.0, crash_cost: float = 50.0,
                 horizon: int = 200, observation: Observation = "vector", image_size: int = 16,
                 batch_size: int = 256, eval_batch_size: int = 4096, seed: int = 0) -> None:
        super().__init__(batch_size, eval_batch_size, seed)
        for name, n in [("n_demos", n_demos), ("n_val", n_val), ("n_eval", n_eval)]:
            check_positive(name, n)
        self.save_hyperparameters()
        self.road = Road(max_dist, safe_dist, persistence, noise, saliency, crash_cost, horizon, observation,
                         image_size)
        self.input_shape = self.road.obs_shape
        corr = self.road.expert_agreement()
        self.specs = [EnvSpec("train", corr), EnvSpec("id", corr), ClosedLoop("ood", float("nan"))]
        self.check_specs()
        self.n_demos, self.n_val, self.n_eval = n_demos, n_val, n_eval
        self.outcome: dict[str, float] = {}

    def batch(self, t: Trajectories) -> Batch:
        """Samples from visited states, episode by episode."""
        reading, light, y = (torch.from_numpy(v.reshape(-1)) for v in (t.reading, t.light, t.expert))
        x = torch.from_numpy(self.road.render(reading.numpy(), light.numpy()))
        return Batch(x, y, light, torch.zeros_like(y), reading.float())

    def demos(self, episodes: int, seed: int) -> Batch:
        blocks = [self.road.rollout(None, CHUNK, seed * 100_003 + i) for i in range(-(-episodes // CHUNK))]
        cut = [np.concatenate(col)[:episodes] for col in zip(*blocks)]
        return self.batch(Trajectories(*cut))

    def setup(self, stage: str | None = None) -> None:
        if not self.data:  # the closed loop has no fixed data: `eval_data` drives the policy
            self.data = {self.specs[0].name: self.demos(self.n_demos, self.seed),
                         self.specs[1].name: self.demos(self.n_val, ID_SEED)}
            self.val_data = {self.specs[1].name: self.demos(self.n_val, VAL_ID_SEED)}

    def intervene(self, batch: Batch, a: Tensor | None = None, causal: Tensor | None = None) -> Tensor:
        if causal is not None:
            raise NotImplementedError("Braking renders interventions on the brake light only")
        light = batch.a if a is None else a
        x = self.road.render(batch.z.cpu().numpy(), light.cpu().numpy())
        return torch.from_numpy(x).to(batch.x.device)

    @torch.no_grad()
    def visit(self, model: nn.Module, episodes: int, seed: int) -> tuple[Batch, dict[str, float]]:
        """Let `model` drive `episodes` episodes; the states it visited, labelled by the expert, and its
        closed-loop outcome (normalised by the expert's return on the same episodes)."""
        device, training = next(model.parameters()).device, model.training
        model.eval()
        t = self.road.rollout(lambda obs: model(torch.from_numpy(obs).to(device)).argmax(1).cpu().numpy(),
                              episodes, seed)
        model.train(training)
        expert = self.road.expert_return(episodes, seed)
        outcome = {"return": float(t.returns.mean()), "return_norm": float(t.returns.mean() / expert),
                   "crash_rate": float(t.crashes.mean())}
        return self.batch(t), outcome

    def deploy(self, model: nn.Module) -> dict[str, float]:
        """The closed-loop outcome of `model` on the test's deployment episodes (for an online curve)."""
        return self.visit(model, self.n_eval, EVAL_SEED)[1]

    def eval_data(self, name: str, model: nn.Module, split: Split = "test") -> Batch:
        if name != self.specs[2].name:
            return super().eval_data(name, model, split)
        episodes, seed = (self.n_val, VAL_EVAL_SEED) if split == "val" else (self.n_eval, EVAL_SEED)
        visited, self.outcome = self.visit(model, episodes, seed)
        return visited

    def deployment_metrics(self, names: list[str]) -> dict[str, float]:
        name = self.specs[2].name
        return {k: v for key, v in self.outcome.items() for k in (f"{name}/{key}", key)} if name in names else {}

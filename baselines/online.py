"""Online: learning in the deployment environment, one stream round at a time, passively or by intervening on a
share of its queries."""

from typing import Literal

import torch
from torch import Tensor

from testbed.envs.base import Batch, ShiftedEnv, concat
from testbed.errors import ConfigError, check_positive, check_unit
from testbed.training.metrics import env_metrics
from testbed.training.module import Baseline


class Online(Baseline):
    """Each round the learner predicts on the incoming batch (its prequential accuracy is logged), then learns
    from the labels. The stream draws from the environment's training pool (reshuffled whenever it runs out)
    until `budget` samples have come in.

    Before learning, it sets the spurious attribute of a `fraction` of the round's samples to a uniformly drawn
    value, do(a ~ U), through the environment's `intervene`; an environment without a renderer may offer
    `query(a=...)` instead, which draws samples that have the requested values. Which samples: `random`, or
    `uncertain` (the least confident predictions). `fraction: 0` is passive online learning: the stream as it
    comes. Every `eval_every` rounds a point of the online curve is recorded: samples and interventions so far,
    and the shifted accuracy (worst `ood` sub-environment) and worst-group accuracy (pooled `ood`), from which
    the report resolves the samples and interventions needed to reach a share of the Oracle's accuracy.

    The default `fraction` of 0.3 is a minority of the queries (an intervention is an action in the deployment
    environment, and costs one) that is still enough, in the confounded preset, to tip the stream: the colour
    agrees with the label 0.85 (0.9 and 0.8) and the shape 0.75 (label noise 0.25), and do(a ~ U) on a share f
    leaves the colour agreeing 0.85 (1 - f) + 0.5 f, under the shape's 0.75 from f = 0.29. Fraction 1 is the
    Oracle trained online, not a question; sweep `fraction` (log-spaced near 0) for the dose-response.

    Args:
        fraction: share of each round's samples the learner intervenes on; 0 is passive.
        selection: which samples it intervenes on.
        budget: online samples before the stream stops.
        eval_every: rounds between two points of the curve.
    """

    def __init__(self, fraction: float = 0.3, selection: Literal["random", "uncertain"] = "random",
                 budget: int = 10000, eval_every: int = 5, **kwargs) -> None:
        super().__init__(**kwargs)
        check_unit("fraction", fraction)
        check_positive("budget", budget)
        check_positive("eval_every", eval_every)
        self.curve: list[dict[str, float]] = []
        self.hits, self.count = 0, 0  # prequential tally since the last curve point
        self.interventions = 0  # samples intervened on so far, on this process

    def check_env(self, env: ShiftedEnv) -> None:
        if self.hparams.fraction > 0 and "a" not in env.interventions and not hasattr(env, "query"):
            raise ConfigError(f"model: Online(fraction > 0) needs an environment that can set the spurious "
                              f"attribute, by intervene(a=...) or query(a=...); {type(env).__name__} offers neither")

    def extra_results(self) -> dict[str, object]:
        h = self.hparams
        return {"online": {"fraction": h.fraction, "selection": h.selection,
                           "interventions": self.interventions * self.trainer.world_size, "curve": self.curve}}

    def on_train_start(self) -> None:
        self.curve, self.interventions = [], 0
        self.record()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        with torch.no_grad():
            logits = self(batch.x)
        hits = (logits.argmax(1) == batch.y).float()
        self.log("online/prequential_acc", hits.mean(), on_step=True, on_epoch=False)
        self.hits, self.count = self.hits + hits.sum(), self.count + len(hits)
        if self.hparams.fraction > 0:
            batch = self.intervene(batch, logits)
        return self.erm_step(batch)

    def intervene(self, batch: Batch, logits: Tensor) -> Batch:
        """The round's batch with the attribute of the chosen samples set to uniformly drawn values."""
        n = round(self.hparams.fraction * len(batch.y))
        self.interventions += n
        if self.hparams.selection == "random":
            order = torch.randperm(len(batch.y), device=batch.y.device)
        else:
            order = logits.softmax(1).amax(1).argsort()
        chosen, kept = order[:n], order[n:]
        a = torch.randint(self.env.n_attr, (n,), device=batch.y.device)
        picked = Batch(*(t[chosen] for t in batch))
        if "a" in self.env.interventions:
            done = picked._replace(x=self.env.intervene(picked, a=a), a=a)
        else:
            queried = Batch(*(t.to(batch.y.device) for t in self.env.query(a=a)))
            done = self.env.on_after_batch_transfer(queried, 0)  # raw samples -> model inputs, as for batches
        return concat([Batch(*(t[kept] for t in batch)), done])

    def on_train_batch_end(self, outputs: object, batch: Batch, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self.global_step % self.hparams.eval_every == 0 or self.total_samples >= self.hparams.budget:
            self.record()
        if self.total_samples >= self.hparams.budget:
            self.trainer.should_stop = True

    @torch.no_grad()
    def record(self) -> None:
        """One point of the online curve: samples and interventions so far, prequential accuracy since the last
        point, the accuracy on the worst shifted sub-environment and the worst-group accuracy over them pooled."""
        training, env = self.training, self.env
        self.eval()
        tallies = [self.tally_env(env, name)[0] for name in env.names("ood")]
        self.train(training)
        weights = env.role_weights().get("ood")  # as the test pass weighs the shifted sub-environments (`summary`)
        shifted = min(env_metrics(t, (), weights)["acc"] for t in tallies)
        point = {"samples": self.total_samples, "interventions": self.interventions * self.trainer.world_size,
                 "shifted_acc": shifted, "shifted_wg": env_metrics(sum(tallies), (), weights)["acc_wg"]}
        if self.count:
            point["prequential_acc"] = float(self.hits) / self.count
        self.curve.append(point)
        self.log("online/shifted_acc", shifted)
        self.hits, self.count = 0, 0

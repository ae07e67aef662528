"""Online: learning in the deployment environment, one stream round at a time, passively or by intervening."""

from typing import Literal

import torch
from torch import Tensor

from testbed.envs.base import Batch, ShiftedEnv, concat
from testbed.errors import ConfigError, check_positive, check_unit
from testbed.module import Baseline


class Online(Baseline):
    """Each round the learner predicts on the incoming batch (its prequential accuracy is logged), then learns
    from the labels. The stream draws from the environment's training pool (reshuffled whenever it runs out)
    until `budget` samples have come in.

    `passive` learns from the samples as they come. `interventional` first sets the spurious attribute of a
    `fraction` of the round's samples to a uniformly drawn value, do(a ~ U), through the environment's
    `intervene`; an environment without a renderer may offer `query(a=...)` instead, which draws samples that
    have the requested values. Which samples: `random`, or `uncertain` (the least confident predictions).
    Every `eval_every` rounds the shifted accuracy (the worst `ood` sub-environment) is recorded: the online
    curve, and the samples needed to reach `target_acc`.

    Args:
        mode: `passive` or `interventional`.
        fraction: share of each round's samples the learner intervenes on.
        selection: which samples it intervenes on.
        budget: online samples before the stream stops.
        eval_every: rounds between two points of the curve.
        target_acc: shifted accuracy whose first crossing is reported.
    """

    def __init__(self, mode: Literal["passive", "interventional"] = "interventional", fraction: float = 1.0,
                 selection: Literal["random", "uncertain"] = "random", budget: int = 10000, eval_every: int = 5,
                 target_acc: float = 0.7, **kwargs) -> None:
        super().__init__(**kwargs)
        check_unit("fraction", fraction)
        check_unit("target_acc", target_acc)
        check_positive("budget", budget)
        check_positive("eval_every", eval_every)
        self.curve: list[dict[str, float]] = []
        self.hits, self.count = 0, 0  # prequential tally since the last curve point

    def check_env(self, env: ShiftedEnv) -> None:
        if self.hparams.mode == "interventional" and "a" not in env.interventions and not hasattr(env, "query"):
            raise ConfigError(f"model: Online(mode=interventional) needs an environment that can set the spurious "
                              f"attribute, by intervene(a=...) or query(a=...); {type(env).__name__} offers neither")

    def extra_results(self) -> dict[str, object]:
        reached = [p["samples"] for p in self.curve if p["shifted_acc"] >= self.hparams.target_acc]
        return {"online": {"samples_to_target": reached[0] if reached else None, "curve": self.curve}}

    def on_train_start(self) -> None:
        self.curve = []
        self.record()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        with torch.no_grad():
            logits = self(batch.x)
        hits = (logits.argmax(1) == batch.y).float()
        self.log("online/prequential_acc", hits.mean(), on_step=True, on_epoch=False)
        self.hits, self.count = self.hits + hits.sum(), self.count + len(hits)
        if self.hparams.mode == "interventional":
            batch = self.intervene(batch, logits)
        return self.erm_step(batch)

    def intervene(self, batch: Batch, logits: Tensor) -> Batch:
        """The round's batch with the attribute of the chosen samples set to uniformly drawn values."""
        n = round(self.hparams.fraction * len(batch.y))
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

    def record(self) -> None:
        """One point of the online curve: samples so far, prequential accuracy since the last point, and
        the accuracy on the worst shifted sub-environment."""
        shifted = min(self.evaluate(self.env, [n], counterfactual=False)["acc"] for n in self.env.names("ood"))
        point = {"samples": self.total_samples, "shifted_acc": shifted}
        if self.count:
            point["prequential_acc"] = float(self.hits) / self.count
        self.curve.append(point)
        self.log("online/shifted_acc", shifted)
        self.hits, self.count = 0, 0

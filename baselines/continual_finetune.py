"""ContinualFinetune: the ERM objective trained through a schedule of shifts, scored after every phase."""

from typing import Any

from torch import Tensor

from testbed.envs.base import Batch, ShiftedEnv
from testbed.errors import ConfigError, check_positive, check_unit
from testbed.training.module import Baseline

Changes = dict[str, Any]


class ContinualFinetune(Baseline):
    """ERM fine-tuned phase after phase on data from a new distribution, each phase starting from the previous
    phase's weights (the first from `init_ckpt`, if given).

    A phase is the environment with some init arguments changed (`ShiftedEnv.variant`): `{}` is the environment
    as configured, `{train_corrs: [0.1]}` reverses the correlation, `{spurious_feature: background}` brings a new
    spurious attribute. The trainer's epochs are split evenly over the phases, and at each phase's start the
    environment serves that phase's training data. After each phase, the held-out data of every phase and of
    every `future` shift (never trained on) are scored; within a phase, the current phase's held-out accuracy
    is tracked every `eval_every` steps to count the samples needed to recover from the shift.

    Each phase's record (`phases` in results.json, `phase{k}/...` in the logged metrics) holds the metrics of
    every environment, the `drop` at the next shift (accuracy on this phase's data minus that on the next
    phase's, or after the last phase the first future shift's, both at this phase's end), the samples this
    phase needed to recover from the shift into it, and its accuracy curve.

    Args:
        phases: environment changes, one per phase.
        future: environment changes of held-out future shifts.
        eval_every: training steps between two points of the curve.
        recover_tol: how close to the pre-shift accuracy counts as recovered.
    """

    def __init__(self, phases: tuple[Changes, ...] = ({}, {"train_corrs": [0.1]}, {"spurious_feature": "background"}),
                 future: tuple[Changes, ...] = ({"spurious_feature": "background", "train_corrs": [0.1]},),
                 eval_every: int = 10, recover_tol: float = 0.02, **kwargs) -> None:
        super().__init__(**kwargs)
        if not phases:
            raise ConfigError("phases: at least one phase is required")
        check_positive("eval_every", eval_every)
        check_unit("recover_tol", recover_tol)
        self.phases, self.future = list(phases), list(future)
        self.envs: dict[str, ShiftedEnv] = {}
        self.records: list[dict[str, Any]] = []

    def variants(self, env: ShiftedEnv) -> dict[str, ShiftedEnv]:
        """Phases `p0, p1, ...` then future shifts `f0, ...`, as environments."""
        out = {}
        for field, schedule in (("phases", self.phases), ("future", self.future)):
            for i, changes in enumerate(schedule):
                try:
                    out[f"{field[0]}{i}"] = env.variant(**changes)
                except ConfigError as err:
                    raise ConfigError(f"model.{field}[{i}]: {err}") from err
        return out

    def check_env(self, env: ShiftedEnv) -> None:
        self.variants(env)

    def extra_results(self) -> dict[str, object]:
        return {"phases": self.records}

    def stages(self) -> tuple[int, str]:
        return len(self.phases), "phases"

    def on_fit_start(self) -> None:
        self.epochs_per_phase = self.split_epochs()
        self.envs = self.variants(self.env)
        for env in self.envs.values():
            env.setup()
        self.records = []
        self.start_phase(0)

    def start_phase(self, k: int) -> None:
        self.phase, self.phase_start, self.curve = k, self.total_samples, []
        self.env.served = self.envs[f"p{k}"].train_data
        self.track()

    def track(self, acc: float | None = None) -> None:
        """One point of the current phase's curve: samples into the phase and held-out accuracy."""
        env = self.envs[f"p{self.phase}"]
        acc = self.evaluate(env, counterfactual=False)["acc"] if acc is None else acc
        point = [self.total_samples - self.phase_start, acc]
        if self.curve and self.curve[-1][0] == point[0]:  # the phase ended on a step that was just tracked
            self.curve.pop()
        self.curve.append(point)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.erm_step(batch)

    def on_train_batch_end(self, outputs: object, batch: Batch, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self.global_step % self.hparams.eval_every == 0:
            self.track()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if (self.current_epoch + 1) % self.epochs_per_phase == 0:
            self.end_phase()

    def samples_to_recover(self) -> int | None:
        """Samples into this phase until its accuracy came within `recover_tol` of the accuracy on the previous
        phase's data before the shift, or of the best this phase reached if that is lower."""
        if not self.records:
            return None
        before = self.records[-1]["metrics"][f"p{self.phase - 1}"]["acc"]
        target = min(before, max(acc for _, acc in self.curve)) - self.hparams.recover_tol
        return next(seen for seen, acc in self.curve if acc >= target)

    def end_phase(self) -> None:
        """Score every environment, record the phase and move on to the next one."""
        k, n = self.phase, len(self.phases)
        metrics = {name: self.evaluate(env) for name, env in self.envs.items()}
        self.track(metrics[f"p{k}"]["acc"])
        after = f"p{k + 1}" if k + 1 < n else "f0" if self.future else None
        drop = metrics[f"p{k}"]["acc"] - metrics[after]["acc"] if after else None
        recover = self.samples_to_recover()
        self.records.append({"phase": k, "changes": self.phases[k], "samples": self.total_samples, "metrics": metrics,
                             "drop": drop, "samples_to_recover": recover, "curve": self.curve})
        logged = {f"phase{k}/{name}/{key}": v for name, m in metrics.items() for key, v in m.items()}
        logged |= {f"phase{k}/{key}": v for key, v in [("drop", drop), ("samples_to_recover", recover)]
                   if v is not None}
        self.log_dict(logged, rank_zero_only=True)
        if k + 1 < n:
            self.start_phase(k + 1)

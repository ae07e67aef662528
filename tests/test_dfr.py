"""DFR against ERM in the confounded regime, its out-of-sample validation scores, and what it refuses."""

import lightning as L
import pytest
import torch
from conftest import CONFIGS, QUIET, assert_same_metrics, results, run_cli
from torch import Tensor

from testbed.baselines import DFR
from testbed.envs import Batch, EnvSpec, ShiftedEnv, SpuriousShapes
from testbed.errors import ConfigError

FAST = [*QUIET, "--data.image_size=14", "--data.n_train=3000", "--data.n_val=1000", "--data.n_test=500",
        "--trainer.max_epochs=3", "--model.width=64"]


def test_dfr_beats_erm_on_the_reversed_environment_with_erm_features_and_a_retrained_head(workdir):
    for name in ("erm", "dfr"):
        run_cli("fit", "-c", str(CONFIGS / "envs/confounded.yaml"), "-c", str(CONFIGS / f"baselines/{name}.yaml"),
                *FAST)
    erm, dfr = (results(workdir / f"runs/lightning_logs/version_{i}")["metrics"] for i in (0, 1))
    # Measured over seeds 0, 1, 2: reversed accuracy ERM 0.09 to 0.11, DFR 0.56 to 0.64; spurious reliance ERM
    # 1.00, DFR 0.26 to 0.30.
    assert dfr["test/ood:corr=0.10/acc"] >= erm["test/ood:corr=0.10/acc"] + 0.3
    assert dfr["test/spurious_reliance"] <= erm["test/spurious_reliance"] - 0.5
    # DFR is ERM with the probe's head: the same seed gives the same features, so DFR scores what ERM's probe does
    # (counts exactly; calibration sums, through the model's forward pass instead of the probe's, within PROB_TOL).
    shared = [k.removeprefix("probe/") for k in erm if k.startswith("probe/")]
    assert_same_metrics({k: dfr[f"test/{k}"] for k in shared}, {k: erm[f"probe/{k}"] for k in shared})


class Unlabelled(SpuriousShapes):
    n_attr = 1  # no spurious attribute to form groups from


def test_dfr_refuses_environments_without_group_labels():
    with pytest.raises(ConfigError, match="DFR needs group labels .* Unlabelled has none"):
        DFR().check_env(Unlabelled(n_train=8, n_val=8, n_test=8))


class Noise(ShiftedEnv):
    """Labels and attributes drawn independently of 32 noise inputs: no head can beat chance out of sample, while one
    fit on a few hundred samples of a 256-dim representation scores above it on those samples."""

    n_classes, input_shape, interventions = 2, (32,), ("a",)

    def __init__(self, seed: int = 0) -> None:
        super().__init__(batch_size=100, seed=seed)
        self.specs = [EnvSpec("train", 0.5), EnvSpec("id", 0.5), EnvSpec("ood", 0.5)]

    def make(self, spec: EnvSpec, index: int, split: str = "test") -> Batch:
        n = 200 if split == "val" else 400
        g = torch.Generator().manual_seed(self.seed * 1000 + index * 3 + ("train", "val", "test").index(split))
        y, a = torch.randint(2, (n,), generator=g), torch.randint(2, (n,), generator=g)
        z = torch.randn(n, 32, generator=g)
        return Batch(z, y, a, torch.full_like(y, index), z)

    def intervene(self, batch: Batch, a: Tensor | None = None, causal: Tensor | None = None) -> Tensor:
        return batch.z


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dfr_validation_scores_are_out_of_sample(seed):
    """Issue 25 bug 9: DFR fits its head on the id validation samples, so scoring that head on them (what selection
    reads) would report the fit, not the generalisation. On pure noise the retrained head scores above chance on
    the samples it was fit on, and DFR's reported id validation accuracy stays at chance."""
    L.seed_everything(seed)
    env = Noise(seed=seed)
    model = DFR(arch="mlp", width=256, input_shape=env.input_shape, n_classes=2)
    fit = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, limit_val_batches=0)
    fit.fit(model, datamodule=env)
    fit.test(model, datamodule=env, verbose=False)
    val = env.val_data["id:corr=0.50"]
    with torch.no_grad():
        in_sample = float((model.net.eval()(val.x).argmax(1) == val.y).float().mean())
    reported = model.final_val()["val/id:corr=0.50/acc"]
    print(f"seed {seed}: in-sample {in_sample:.3f}, reported {reported:.3f}")
    assert in_sample >= 0.6  # the regime can tell: the head fits its own samples
    assert reported == pytest.approx(0.5, abs=0.1)

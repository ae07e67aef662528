"""DFR against ERM in the confounded regime, and what it refuses."""

import pytest
from conftest import CONFIGS, QUIET, assert_same_metrics, results, run_cli

from testbed.baselines import DFR
from testbed.envs import SpuriousShapes
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

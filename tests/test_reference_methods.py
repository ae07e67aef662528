"""IRM, VREx and GroupDRO against ERM in the confounded regime (Colored MNIST settings)."""

import pytest
from conftest import CONFIGS, QUIET, results, run_cli

CONFOUNDED = str(CONFIGS / "envs" / "confounded.yaml")
# 14-pixel images (as Arjovsky et al. downsample MNIST) keep the 10 epochs of four runs fast on a CPU.
FAST = [*QUIET, "--data.image_size=14", "--data.n_val=1000", "--data.n_test=1000", "--trainer.max_epochs=10"]


@pytest.mark.slow
def test_irm_vrex_and_group_dro_beat_erm_on_the_reversed_environment(workdir):
    names = ["erm", "irm", "vrex", "group_dro"]
    for name in names:
        run_cli("fit", "-c", CONFOUNDED, "-c", str(CONFIGS / "baselines" / f"{name}.yaml"), *FAST)
    runs = {n: results(workdir / f"runs/lightning_logs/version_{i}") for i, n in enumerate(names)}
    assert [runs[n]["model"] for n in names] == ["ERM", "IRM", "VREx", "GroupDRO"]
    rev = {n: r["metrics"]["test/ood:corr=0.10/acc"] for n, r in runs.items()}
    reliance = {n: r["metrics"]["test/spurious_reliance"] for n, r in runs.items()}
    assert rev["erm"] <= 0.3 and reliance["erm"] >= 0.7
    assert rev["irm"] >= rev["erm"] + 0.25
    assert rev["vrex"] >= rev["erm"] + 0.15
    assert rev["group_dro"] >= rev["erm"] + 0.25
    for n in ("irm", "vrex", "group_dro"):
        assert reliance[n] <= reliance["erm"] - 0.4, n

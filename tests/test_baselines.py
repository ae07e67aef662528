"""Every baseline config trains on a tiny environment and writes its results: each is sweepable as it stands."""

import pytest
import yaml
from conftest import CONFIGS, QUIET, results, run_cli

TINY = [*QUIET, "--data.image_size=8", "--data.n_train=256", "--data.n_val=64", "--data.n_test=64",
        "--trainer.max_epochs=3"]


@pytest.mark.parametrize("config", sorted((CONFIGS / "baselines").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_baseline_config_trains_and_writes_results(workdir, config):
    run_cli("fit", "-c", str(CONFIGS / "envs" / "confounded.yaml"), "-c", str(config), *TINY)
    run = results(workdir / "runs/lightning_logs/version_0")
    assert run["model"] == yaml.safe_load(config.read_text())["model"]["class_path"]
    assert 0 <= run["metrics"]["test/acc_avg"] <= 1 and run["train_samples"] > 0

"""The transformer sweep file, shrunk, runs through `sweep`, `plot` and `report` like the image sweeps."""

import pandas as pd
import pytest
import yaml
from conftest import CONFIGS, run_cli


@pytest.mark.slow  # four runs and the analysis commands: about 2 minutes on a loaded 2-core machine
def test_a_tiny_transformer_width_and_depth_sweep_runs_through_sweep_plot_and_report(workdir):
    sweep = yaml.safe_load((CONFIGS / "sweeps" / "text_transformers.yaml").read_text())
    sweep["axes"] |= {"config": {"confounded": str(CONFIGS / "envs" / "text_confounded.yaml")}, "model": ["ERM"],
                      "model.width": [8, 16], "model.depth": [1, 2]}
    sweep["args"] |= {"trainer.max_epochs": 1, "data.n_train": 256, "data.n_val": 64, "data.n_test": 64}
    sweep["seeds"] = [0]
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(sweep))
    run_cli("sweep", "-c", "tiny.yaml", "--out", "out")
    run_cli("plot", "out/text_transformers")
    run_cli("report", "out/text_transformers")
    table = pd.read_csv(workdir / "out/text_transformers/results.csv")
    assert table.run.nunique() == 4 and table.params.nunique() == 4  # parameters are the scale of width x depth
    flops = table.groupby("params").flops.first()
    assert flops.is_monotonic_increasing and flops.iloc[0] > 0
    assert (workdir / "out/text_transformers/figures/scaling_params.png").stat().st_size > 1000
    report = (workdir / "out/text_transformers/report.md").read_text()
    assert report.startswith("## Verdict\n") and "## Endpoints at each model size" in report

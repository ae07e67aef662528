"""What `testbed fit` prints: one line per epoch when stdout is not a terminal, then the summary table, nothing else."""

import json
import logging
import os
import subprocess
import sys

from conftest import CONFIGS, ROOT, run_cli

from testbed.cli.table import run_table

TINY = ["-c", str(CONFIGS / "envs" / "confounded.yaml"), "-c", str(CONFIGS / "baselines" / "erm.yaml"),
        "--data.n_train=300", "--data.n_val=100", "--data.n_test=100", "--model.width=16", "--trainer.max_epochs=2"]


def test_fit_prints_progress_lines_and_the_summary_table_and_nothing_else(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OUTDATED_IGNORE": "1"}
    done = subprocess.run([sys.executable, "-m", "testbed", "fit", *TINY], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert not [line for line in out.splitlines() if any(w in line for w in ("GPU available", "Tip", "Warning"))]
    assert "\r" not in out  # no redrawn bar in a log
    run = json.loads((tmp_path / "runs/lightning_logs/version_0/results.json").read_text())
    lines = out.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["epoch 1/2", "epoch 2/2"]
    assert lines[2:] == ["", *run_table(run).splitlines(), "results: runs/lightning_logs/version_0/results.json"]
    table = run_table(run)
    assert "ood:corr=0.10" in table and "OOD (pooled)" in table and "spurious reliance" in table
    assert run["train_corr"] == 0.85  # (0.9 + 0.8) / 2, not 0.8500000000000001


def test_verbose_brings_lightnings_messages_back(workdir, capfd):
    """Read through a handler on Lightning's logger: its own stream handler is bound to whichever stderr was current
    when Lightning was imported, which under pytest need not be this test's."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # as an in-process sweep leaves it
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logger.addHandler(handler)
    try:
        run_cli("fit", *TINY, "--trainer.enable_progress_bar=false", "--verbose")
        assert any("GPU available" in r.getMessage() for r in records)
        records.clear()
        run_cli("fit", *TINY, "--trainer.enable_progress_bar=false")
        assert not any("GPU available" in r.getMessage() for r in records)
    finally:
        logger.removeHandler(handler)
    assert "OOD (pooled)" in capfd.readouterr().out


def test_test_and_validate_print_the_table_instead_of_lightnings(workdir, capfd):
    run_cli("fit", *TINY, "--trainer.enable_progress_bar=false")
    fitted = workdir / "runs/lightning_logs/version_0"
    (ckpt,) = (fitted / "checkpoints").glob("*.ckpt")
    capfd.readouterr()
    for command, stage in (("test", "test"), ("validate", "val")):
        run_cli(command, "-c", str(fitted / "config.yaml"), "--ckpt_path", str(ckpt),
                "--trainer.enable_progress_bar=false")
        out, err = capfd.readouterr()
        assert "OOD (pooled)" in out and "DataLoader" not in out + err and "Warning" not in out + err
        assert f"{stage}/acc_id" not in out  # the plain table, not Lightning's metric listing


def test_the_table_has_a_row_per_sub_environment_and_the_closed_loop_figures():
    run = {"model": "ERM", "data": "Braking", "epochs": 3, "n_train": 900, "params": 4500, "wall_time_s": 2.5,
           "metrics": {"test/train:corr=0.91/acc": 0.92, "test/id:corr=0.91/acc": 0.91,
                       "test/ood:closed_loop/acc": 0.6, "test/ood:closed_loop/return": -40.0,
                       "test/acc_id": 0.91, "test/acc_avg": 0.6, "test/acc_wg": 0.2, "test/spurious_reliance": 0.4,
                       "test/return": -40.0, "test/return_norm": -0.37, "test/crash_rate": 3.25}}
    lines = run_table(run).splitlines()
    assert lines[0] == "ERM on Braking: 3 epochs, 900 training samples, 4,500 parameters, 2.5 s"
    assert [line.split()[0] for line in lines[2:5]] == ["train:corr=0.91", "id:corr=0.91", "ood:closed_loop"]
    assert lines[-1] == "closed loop: return -40.000, return / expert's -0.370, crashes per episode 3.250"
    assert "causal sensitivity" not in lines[1]  # no column the run has no value for

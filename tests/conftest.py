import json
import os
import sys
from pathlib import Path
from unittest.mock import patch

import pytest
import torch

os.environ.setdefault("OUTDATED_IGNORE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # transformers never reaches the network: its models are local folders
# The tests train tiny models: one thread is as fast for them and does not oversubscribe a shared CPU. The suite must
# pass with any thread count, so torch follows OMP_NUM_THREADS where it is set (`OMP_NUM_THREADS=2 pytest`).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
QUIET = ["--trainer.enable_progress_bar=false"]


def run_cli(*args: str) -> None:
    """Run `testbed ARGS` in this process, as a user would type it."""
    from testbed.cli.main import main

    with patch.object(sys, "argv", ["testbed"]):
        main([*args])


def cli_error(capsys: pytest.CaptureFixture, *args: str) -> list[str]:
    """Run `testbed ARGS`, which must fail with exit status 2; return the lines it wrote to stderr."""
    with pytest.raises(SystemExit) as exit_:
        run_cli(*args)
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


# Comparing the metrics of two code paths (DDP and one process, a checkpoint and the fitted model, packed and
# sequential runs, Ray and this process). Counts over n (every accuracy, worst group, per-group accuracy, flip rate,
# and the differences of accuracies) are tallied exactly in float64 from the predictions: they are compared exactly.
# The calibration metrics are means of per-sample float terms: the float32 probabilities of a forward pass, which
# another summation order (batch size, thread count, BLAS kernel, CPU) rounds differently. Measured on a 28 px
# SpuriousShapes MLP across batch sizes 1 to 1024 and 1 or 2 threads: at most 1.8e-7 per probability, 1.5 units of
# float32 rounding (2^-23 = 1.2e-7). PROB_TOL allows 1e-5 per probability, 80 such units; the float64 sums over
# samples add nothing measurable. A mean of per-sample terms each moved by at most d moves by at most d: ECE, the
# sum over bins of |correct - confidence| over n, by at most PROB_TOL; Brier, sum_k (p_k - y_k)^2 per sample with
# |p_k - y_k| <= 1, by at most 2 * n_classes * PROB_TOL. (A confidence within PROB_TOL of a bin edge, or a
# prediction within it of a tie, would move a sample between bins or flip it: one in about 10^5 samples.) Either
# bound is far below what a sample scored twice or missed moves them by (about 1 / n).
PROB_TOL = 1e-5
FLOAT_SUMS = {"ece": 1, "brier": 4}  # metric -> its bound in units of PROB_TOL (Brier: 2 * n_classes, 2 classes)


def float_sum(key: str) -> bool:
    """Whether metric `key` (e.g. `test/ood:corr=0.10/ece`) is a mean of float terms rather than a count over n."""
    return key.rsplit("/", 1)[-1] in FLOAT_SUMS


def assert_same_metrics(a: dict[str, float], b: dict[str, float], prob_tol: float = PROB_TOL) -> None:
    """`a` and `b` have the same keys, the same counts exactly and the same float sums within their bounds."""
    assert a.keys() == b.keys(), set(a) ^ set(b)
    counts = [k for k in a if not float_sum(k)]
    assert {k: a[k] for k in counts} == {k: b[k] for k in counts}, {k: (a[k], b[k]) for k in counts if a[k] != b[k]}
    bound = {k: FLOAT_SUMS[k.rsplit("/", 1)[-1]] * prob_tol for k in a if float_sum(k)}
    off = {k: (a[k], b[k]) for k in bound if abs(a[k] - b[k]) > bound[k]}
    assert not off, off


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory: runs land in ./runs below it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path

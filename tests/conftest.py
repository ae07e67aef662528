import json
import os
import sys
from pathlib import Path
from unittest.mock import patch

import pytest
import torch

os.environ.setdefault("OUTDATED_IGNORE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # transformers never reaches the network: its models are local folders
# The tests train tiny models: one thread is as fast for them and does not oversubscribe a shared CPU.
torch.set_num_threads(1)

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


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory: runs land in ./runs below it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path

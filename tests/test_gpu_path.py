"""The GPU path's settings, checked on the CPU: bf16 mixed precision and the opt-in `torch.compile`
(`testbed.training.compile.Compile`) in `fit` and in sweeps, where such runs train one by one."""

import json

from conftest import CONFIGS, QUIET, results, run_cli

FIT = ["fit", "-c", str(CONFIGS / "envs/confounded.yaml"), "-c", str(CONFIGS / "baselines/erm.yaml"), *QUIET,
       "--data.image_size=8", "--data.n_train=256", "--data.n_val=64", "--data.n_test=64", "--data.batch_size=64",
       "--model.width=16", "--model.probe=false", "--trainer.max_epochs=3", "--trainer.limit_val_batches=0",
       "--trainer.enable_checkpointing=false"]
# aot_eager traces the network as inductor does but generates no kernels: the wiring, in seconds, without a compiler.
COMPILE = ["--trainer.callbacks+=testbed.training.compile.Compile", "--trainer.callbacks.backend=aot_eager"]


def test_fit_trains_in_bf16_mixed_precision_with_a_compiled_network(workdir):
    run_cli(*FIT, "--trainer.precision=bf16-mixed", *COMPILE)
    run_cli(*FIT)
    mixed, plain = (results(workdir / f"runs/lightning_logs/version_{v}") for v in (0, 1))
    assert mixed["steps"] == plain["steps"] == 12
    # bf16 rounds activations to 8 bits of mantissa: the same run, not the same numbers.
    assert 0 < mixed["convergence"]["train_loss"] < 0.72 and mixed["convergence"]["train_loss"] != plain[
        "convergence"]["train_loss"]
    assert abs(mixed["metrics"]["test/acc_id"] - plain["metrics"]["test/acc_id"]) < 0.15


def test_a_sweep_trains_bf16_and_compiled_runs_one_by_one(workdir, capsys):
    sweep = {"name": "g", "configs": [str(CONFIGS / "envs/confounded.yaml")], "seeds": [0, 1],
             "axes": {"model": ["ERM"]},
             "args": {"data.image_size": 8, "data.n_train": 256, "data.batch_size": 64, "data.n_val": 64,
                      "data.n_test": 64, "model.width": 8, "model.probe": False, "trainer.max_epochs": 2,
                      "trainer.limit_val_batches": 0,
                      "trainer.enable_checkpointing": False, "trainer.precision": "bf16-mixed",
                      "trainer.callbacks": [{"class_path": "testbed.training.compile.Compile",
                                             "init_args": {"backend": "aot_eager"}}]}}
    (workdir / "g.yaml").write_text(json.dumps(sweep))
    run_cli("sweep", "-c", "g.yaml", "--out", "out")
    assert "0 runs train in 0 packed models; 2 one by one (ERM 2)" in capsys.readouterr().out
    runs = [d for d in (workdir / "out/g").iterdir() if (d / "done").exists()]
    assert len(runs) == 2 and all(results(d)["steps"] == 8 for d in runs)


def test_compile_refuses_an_unknown_mode(capsys):
    from conftest import cli_error

    err = cli_error(capsys, *FIT, "--trainer.callbacks+=testbed.training.compile.Compile",
                    "--trainer.callbacks.mode=fast")
    assert "Compile.mode: 'fast' is not allowed" in err[-1]


def test_cuda_is_asked_through_nvml_only_where_nvml_loads(monkeypatch):
    """Lightning turns on torch's NVML-based CUDA check; without NVIDIA's driver each check (one per Adam step)
    fails to load NVML first. testbed turns it off exactly where NVML does not load, and the answer stays."""
    import ctypes
    import os

    import torch

    from testbed.training.compat import NVML_CHECK, check_cuda_by_nvml_only_where_it_loads

    answer = torch.cuda.is_available()
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        loads = True
    except OSError:
        loads = False
    monkeypatch.setenv(NVML_CHECK, "1")
    check_cuda_by_nvml_only_where_it_loads()
    assert os.environ[NVML_CHECK] == ("1" if loads else "0") and torch.cuda.is_available() == answer
    monkeypatch.setenv(NVML_CHECK, "1")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: object())  # a machine whose NVML loads keeps the check
    check_cuda_by_nvml_only_where_it_loads()
    assert os.environ[NVML_CHECK] == "1"

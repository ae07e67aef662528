"""The SLURM path (`--executor submitit`): the job script, cluster settings and their errors, and one job array run
end to end by submitit's LocalExecutor (real processes, pickles and signals), with a preempted and a killed task."""

import json
import os

import pytest
from conftest import cli_error, run_cli
from test_sweep import TINY, write_sweep

from testbed.errors import ConfigError
from testbed.sweep.cluster import cluster_settings

pytest.importorskip("submitit")


def test_dry_run_prints_the_array_script_with_the_file_s_resources_under_the_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sweep = write_sweep(tmp_path / "s.yaml", axes={"data.n_train": [200, 300, 400]}, seeds=[0], pack=False,
                        cluster={"partition": "gpu", "time": 30, "gpus": 1, "cpus_per_task": 2})
    run_cli("sweep", "-c", str(sweep), "--out", "out", "--executor", "submitit", "--dry-run", "--time", "90",
            "--array-parallelism", "2")
    script = capsys.readouterr().out
    for line in ["#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=2", "#SBATCH --signal=USR2@90", "-m submitit.core._submit"]:
        assert line in script
    assert not (tmp_path / "out").exists(), "a dry run writes nothing"


def test_tasks_given_gpus_run_their_runs_one_by_one_instead_of_packed_on_the_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sweep = write_sweep(tmp_path / "s.yaml", args={**TINY, "trainer.limit_val_batches": 0})  # 4 points x 2 seeds
    tasks = {}
    for gpus in ("0", "1"):
        run_cli("sweep", "-c", str(sweep), "--out", "out", "--executor", "submitit", "--dry-run", "--gpus", gpus)
        tasks[gpus] = capsys.readouterr().out.split("job script of the first array (")[1].split(" tasks")[0]
    assert tasks == {"0": "4", "1": "8"}  # the 2 seeds of a point packed into one task on the CPU; on GPUs, apart


@pytest.mark.parametrize("block, flags, message", [
    ({"partiton": "gpu"}, {}, "sweep.cluster.partiton: unknown key; allowed keys are backend, partition, time"),
    ({"backend": "pbs"}, {}, "sweep.cluster.backend: 'pbs' is not allowed; choose one of auto, slurm, local"),
    ({"time": 30}, {"time": 0}, "--time: 0 is not allowed; it must be a positive integer"),
    ({}, {"gpus": 1.5}, "--gpus: 1.5 is not allowed; give a whole number of GPUs, or a fraction in (0, 1]"),
    ({"array_parallelism": True}, {}, "sweep.cluster.array_parallelism: True is not allowed"),
])
def test_bad_cluster_settings_name_the_field_and_what_is_allowed(block, flags, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        cluster_settings(block, flags)


def test_cluster_flags_the_executor_does_not_use_and_fractional_slurm_gpus_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0])
    (err,) = cli_error(capsys, "sweep", "-c", str(sweep), "--out", "out", "--executor", "ray", "--time", "5")
    assert err.endswith("--time: a cluster resource, not used by --executor ray; it applies to --executor submitit")
    (err,) = cli_error(capsys, "sweep", "-c", str(sweep), "--out", "out", "--executor", "submitit", "--dry-run",
                       "--gpus", "0.5")
    assert "gpus: 0.5 is not allowed with --executor submitit; SLURM allocates whole GPUs" in err


# A plug-in environment whose run is cut off at its first two attempts, mid-run: the first sends the array task
# Lightning's SLURM requeue signal (SIGUSR1), as SLURM does before a preemption; the second SIGKILLs it, as the
# out-of-memory killer would. Each attempt leaves a marker file.
FLAKY = """
import os, signal
from pathlib import Path
from testbed.envs import SpuriousShapes

MARKS = Path({marks!r})

class Flaky(SpuriousShapes):
    def make(self, spec, index, split):
        attempt = len(list(MARKS.iterdir())) + 1 if split == "train" else 0
        if attempt:
            (MARKS / str(attempt)).write_text(str(os.getpid()))
        if attempt in (1, 2):
            os.kill(os.getpid(), signal.SIGUSR1 if attempt == 1 else signal.SIGKILL)
        return super().make(spec, index, split)
"""


@pytest.mark.slow
def test_local_job_array_requeues_a_preempted_task_and_resubmits_a_killed_one(tmp_path, monkeypatch, capsys):
    (tmp_path / "marks").mkdir()
    (tmp_path / "flaky.py").write_text(FLAKY.format(marks=str(tmp_path / "marks")))
    (tmp_path / "flaky.yaml").write_text("data:\n  class_path: flaky.Flaky\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the sweep resolves the plug-in here, its array tasks there
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.chdir(tmp_path)
    sweep = write_sweep(tmp_path / "s.yaml", configs=[str(tmp_path / "flaky.yaml")], pack=False, axes={},
                        seeds=[0], cluster={"backend": "local"})
    run_cli("sweep", "-c", str(sweep), "--out", "out", "--executor", "submitit")
    out = capsys.readouterr().out
    root = tmp_path / "out/s"
    (run,) = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert (run / "done").exists() and not (run / "error.txt").exists()
    assert json.loads((run / "results.json").read_text())["steps"] > 0
    pids = [(tmp_path / "marks" / str(i)).read_text() for i in (1, 2, 3)]
    assert len(set(pids)) == 3, "three attempts, each in its own process"
    # The preempted task was requeued by submitit as the same array task (its log says so, and no second array
    # was submitted for it); the killed one, which left no result, was submitted again as an array of one.
    logs = "".join(p.read_text() for p in (root / ".submitit").rglob("*_log.err"))
    assert "Caught signal SIGUSR1" in logs and "this job is preempted" in logs
    assert out.count("1 array tasks submitted") == 2
    # Resumption is by run hash: the sweep run again finds the run done and submits nothing.
    run_cli("sweep", "-c", str(sweep), "--out", "out", "--executor", "submitit")
    out = capsys.readouterr().out
    assert "1 runs, 1 already done" in out and "submitted" not in out

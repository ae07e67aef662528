"""Cluster resources of a sweep: the `cluster:` block of a sweep file, overridden by the command line.

    cluster: {partition: gpu, time: 120, gpus: 1, cpus_per_task: 2, array_parallelism: 64}

`--executor submitit` submits each stage wave's pending jobs as one SLURM job array with these resources
(`backend: local` runs the array as local processes, submitit's `LocalExecutor`: the same pickling, signals and
requeues, without SLURM). `--executor ray` reads `gpus` only: the GPUs (or fraction of one) each Ray task asks for.
No torch and no submitit here: the sweep file is checked before anything heavy is imported.
"""

from dataclasses import dataclass, fields
from typing import Any

from testbed.errors import ConfigError, check_keys

BACKENDS = ("auto", "slurm", "local")


@dataclass
class Cluster:
    """Resources of one array task (one job: a run, or the runs of one pack).

    Args:
        backend: `slurm` (sbatch), `local` (local processes, for trying the path without SLURM) or `auto`
            (slurm where `srun` is on PATH, else local).
        partition: SLURM partition; None for the cluster's default.
        time: minutes an array task may run; a task that reaches its limit (or is preempted) is requeued and
            resumes by run hash, up to 3 times (submitit's `max_num_timeout`).
        gpus: GPUs per array task (an integer) under submitit; under Ray, GPUs per task, a fraction so that
            several small runs share one GPU (None: the cluster's GPUs over its CPUs).
        cpus_per_task: CPUs of an array task, and the torch threads its runs use.
        array_parallelism: array tasks that may run at once (SLURM's `--array=0-N%P`).
    """

    backend: str = "auto"
    partition: str | None = None
    time: int = 60
    gpus: float | None = None
    cpus_per_task: int = 1
    array_parallelism: int = 256  # submitit's default


def _integer(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{field}: {value!r} is not allowed; it must be a positive integer")


def cluster_settings(block: Any, overrides: dict[str, Any] | None = None, source: str = "sweep.cluster") -> Cluster:
    """The `cluster:` block checked, with the command line's values (`overrides`, None for unset) on top; a bad
    key or value is a ConfigError naming it and what is allowed."""
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise ConfigError(f"{source}: must be a mapping with keys {', '.join(f.name for f in fields(Cluster))}")
    check_keys(source, block, [f.name for f in fields(Cluster)])
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    label = {**{k: f"{source}.{k}" for k in block}, **{k: "--" + k.replace("_", "-") for k in flags}}
    cluster = Cluster(**{**block, **flags})
    if "backend" in label and cluster.backend not in BACKENDS:
        raise ConfigError(f"{label['backend']}: {cluster.backend!r} is not allowed; choose one of "
                          f"{', '.join(BACKENDS)}")
    if "partition" in label and not isinstance(cluster.partition, str):
        raise ConfigError(f"{label['partition']}: {cluster.partition!r} is not allowed; give a partition name")
    for key in ("time", "cpus_per_task", "array_parallelism"):
        if key in label:
            _integer(label[key], getattr(cluster, key))
    gpus = cluster.gpus
    if "gpus" in label and (isinstance(gpus, bool) or not isinstance(gpus, int | float) or gpus < 0
                            or (gpus > 1 and gpus != int(gpus))):
        raise ConfigError(f"{label['gpus']}: {gpus!r} is not allowed; give a whole number of GPUs, or a fraction "
                          "in (0, 1] for Ray tasks that share a GPU")
    return cluster


def slurm_gpus(cluster: Cluster) -> int:
    """The GPUs of one SLURM array task: a whole number (SLURM allocates whole GPUs)."""
    if cluster.gpus is not None and cluster.gpus != int(cluster.gpus):
        raise ConfigError(f"gpus: {cluster.gpus} is not allowed with --executor submitit; SLURM allocates whole "
                          "GPUs: give 0, 1, 2, ... (fractions are for --executor ray)")
    return int(cluster.gpus or 0)

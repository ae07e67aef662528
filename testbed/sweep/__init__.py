"""Sweeps, step by step:

- `spec`: a sweep file loaded, checked and expanded into runs (no torch);
- `resolve`: each run's config resolved as `testbed fit` would, hashed into its id, and checked;
- `stages`: runs that start from an earlier stage's run of the same scale point, in dependency order;
- `folders`: a run's folder and the sweep's manifest;
- `fit`: one resolved run fitted without LightningCLI;
- `packing`: runs that differ only in seeds and per-model knobs, fitted as one batched model;
- `job`: one run or one pack, fitted into its folders;
- `cluster`: the resources of SLURM array tasks (and Ray's GPUs per task), from a sweep's `cluster:` block;
- `executors`: the jobs mapped over this process, worker processes (one GPU each), a Ray cluster or SLURM job
  arrays (submitit).
"""

from testbed.sweep.spec import Run, Sweep, expand, load_sweep

__all__ = ["Run", "Sweep", "expand", "load_sweep"]

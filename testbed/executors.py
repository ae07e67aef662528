"""Where a sweep's runs execute: in this process, in long-lived local worker processes, or on Ray.

No executor starts a new Python per run: imports cost seconds, a small run less than that.
"""

import json
import multiprocessing as mp
import os
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from testbed.errors import ConfigError, check_positive
from testbed.files import write_atomic
from testbed.sweep import Run, execute_job, expand, identify, load_sweep, packs


def _quiet_worker(threads: int) -> None:
    import logging

    import torch

    torch.set_num_threads(threads)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _execute(job: tuple[list[Run], Path]) -> list[str]:
    return execute_job(*job)


def run_local(jobs: list[list[Run]], root: Path, workers: int) -> list[str]:
    bar = tqdm(total=sum(map(len, jobs)), desc="runs", unit="run")
    statuses = []
    if workers == 1:
        _quiet_worker(os.cpu_count() or 1)
        for job in jobs:
            statuses += execute_job(job, root)
            bar.update(len(job))
        return statuses
    threads = max(1, (os.cpu_count() or 1) // workers)
    with mp.get_context("spawn").Pool(workers, initializer=_quiet_worker, initargs=(threads,)) as pool:
        for done in pool.imap_unordered(_execute, [(job, root) for job in jobs]):
            statuses += done
            bar.update(len(done))
    return statuses


def run_ray(jobs: list[list[Run]], root: Path, address: str | None) -> list[str]:
    """Each job is a Ray task of one CPU; `root` and the config files must be on a filesystem every node sees."""
    try:
        import ray
    except ImportError:
        raise ConfigError("executor: ray is not installed; pip install 'testbed[ray]'") from None
    local = {} if address else {"_node_ip_address": "127.0.0.1", "include_dashboard": False}
    ray.init(address=address, log_to_driver=False, **local)
    try:
        task = ray.remote(num_cpus=1)(execute_job)
        pending = [task.remote(job, root) for job in jobs]
        statuses = []
        with tqdm(total=sum(map(len, jobs)), desc="runs", unit="run") as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                (finished,) = ray.get(done)
                statuses += finished
                bar.update(len(finished))
        return statuses
    finally:
        ray.shutdown()


def run_sweep(config: Path, out: Path, executor: str = "local", workers: int = 1,
              address: str | None = None, dry_run: bool = False) -> Counter:
    """Expand the sweep, check every run's config, then run those not yet done."""
    check_positive("workers", workers)
    sweep = load_sweep(config)
    runs = expand(sweep)
    identify(runs)  # every run parses before anything starts
    runs = list({run.id: run for run in runs}.values())
    root = (out / sweep.name).resolve()
    pending = [run for run in runs if not (root / run.id / "done").exists()]
    print(f"sweep {sweep.name}: {len(runs)} runs, {len(runs) - len(pending)} already done, in {root}")
    if dry_run:
        for run in runs:
            print(run.id, run.axes, f"seed={run.seed}")
        return Counter()
    write_atomic(root / "sweep.yaml", Path(config).read_text())
    # The runs of this sweep file as it is run now: the analysis reads only these (an edited file's old runs stay).
    write_atomic(root / "manifest.json", json.dumps({"sweep": sweep.name, "runs": [run.id for run in runs]}) + "\n")
    jobs = packs(pending) if sweep.pack else [[run] for run in pending]
    packed = sum(len(job) for job in jobs if len(job) > 1)
    if sweep.pack and pending:
        print(f"packing: {packed} runs train in {sum(len(job) > 1 for job in jobs)} packed models; "
              f"{len(pending) - packed} one by one (packing needs runs that differ only in their seed, ERM on an "
              f"mlp backbone, no validation or checkpoints, on the CPU)")
    statuses = run_ray(jobs, root, address) if executor == "ray" else run_local(jobs, root, workers)
    counts = Counter(statuses)
    print(f"sweep {sweep.name}: {counts['done']} ran, {counts['failed']} failed, "
          f"{len(runs) - len(pending)} skipped; results in {root}")
    for run in pending:
        if (root / run.id / "error.txt").exists():
            print(f"  failed: {run.id} {run.axes} seed={run.seed}: see {root / run.id / 'error.txt'}")
    return counts

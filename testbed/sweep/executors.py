"""Where a sweep's runs execute: in this process, in long-lived local worker processes, or on Ray.

No executor starts a new Python per run: imports cost seconds, a small run less than that.
"""

import multiprocessing as mp
import os
import queue
import signal
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from testbed.errors import ConfigError, check_positive
from testbed.files import write_atomic
from testbed.quiet import quiet
from testbed.sweep.folders import write_manifest
from testbed.sweep.job import execute_job, pack_summary, packs
from testbed.sweep.resolve import staged_runs
from testbed.sweep.spec import Run, load_sweep
from testbed.sweep.stages import forget, orphans, release, stale, waves


def _quiet_worker(threads: int) -> None:
    import logging

    import torch

    torch.set_num_threads(threads)
    quiet(verbose=False)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _ray_job(job: list[Run], root: Path) -> list[str]:
    _quiet_worker(1)
    return execute_job(job, root)


def _serve(inbox: "mp.SimpleQueue", outbox: "mp.Queue", threads: int) -> None:
    """A worker process: runs the jobs it is handed, one at a time, until it is handed None."""
    _quiet_worker(threads)
    for index, job, root in iter(inbox.get, None):
        outbox.put((index, execute_job(job, root)))


class _Worker:
    """One long-lived worker process and the job it holds (its index in the job list), if any."""

    def __init__(self, ctx: mp.context.SpawnContext, outbox: "mp.Queue", threads: int) -> None:
        self.inbox = ctx.SimpleQueue()
        self.proc = ctx.Process(target=_serve, args=(self.inbox, outbox, threads), daemon=True)
        self.proc.start()
        self.job: int | None = None


def _ended(exitcode: int | None) -> str:
    return f"was killed by {signal.Signals(-exitcode).name}" if exitcode and exitcode < 0 else f"exited ({exitcode})"


def _lost(job: list[Run], root: Path, how: str) -> list[str]:
    """The statuses of a job whose worker died under it on its last try (e.g. SIGKILL from the out-of-memory
    killer): its runs that finished stay done, the others fail with an `error.txt` that says how it ended."""
    statuses = []
    for run in job:
        out = root / run.id
        if (out / "done").exists():
            statuses.append("done")
            continue
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "error.txt", f"the worker process running this run {how} (out of memory?); the next "
                                        "invocation of the sweep runs it again\n")
        statuses.append("failed")
    return statuses


LOCAL_TRIES = 2  # a job whose worker dies is run once more on a fresh worker (runs are idempotent by hash)


def run_local(jobs: list[list[Run]], root: Path, workers: int) -> list[str]:
    """Run the jobs in this process (one worker) or in `workers` spawned processes. A worker that dies is
    replaced and its job run again on the fresh one; a job that kills its worker `LOCAL_TRIES` times fails,
    with the signal named, so a lost process never hangs the sweep."""
    bar = tqdm(total=sum(map(len, jobs)), desc="runs", unit="run")
    statuses: list[str] = []
    if workers == 1:
        _quiet_worker(os.cpu_count() or 1)
        for job in jobs:
            statuses += execute_job(job, root)
            bar.update(len(job))
        return statuses
    ctx = mp.get_context("spawn")
    outbox = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = [_Worker(ctx, outbox, threads) for _ in range(min(workers, len(jobs)))]
    todo, left = list(range(len(jobs))), set(range(len(jobs)))
    deaths: Counter = Counter()

    def finish(index: int, done: list[str]) -> None:
        left.discard(index)
        statuses.extend(done)
        bar.update(len(done))

    try:
        while left:
            for worker in pool:
                if worker.job is None and todo:
                    worker.job = todo.pop(0)
                    worker.inbox.put((worker.job, jobs[worker.job], root))
            try:
                index, done = outbox.get(timeout=0.2)
                if index in left:  # not already reported lost
                    finish(index, done)
                    todo[:] = [i for i in todo if i != index]  # its worker died just after reporting
                    for worker in pool:
                        worker.job = None if worker.job == index else worker.job
            except queue.Empty:
                pass
            for i, worker in enumerate(pool):
                if worker.job is not None and not worker.proc.is_alive():
                    deaths[worker.job] += 1
                    if deaths[worker.job] < LOCAL_TRIES:
                        todo.insert(0, worker.job)  # finished runs of the job are skipped on the retry
                    else:
                        how = f"{_ended(worker.proc.exitcode)} on each of {LOCAL_TRIES} tries"
                        finish(worker.job, _lost(jobs[worker.job], root, how))
                    pool[i] = _Worker(ctx, outbox, threads)
    finally:
        for worker in pool:
            if worker.proc.is_alive():
                worker.inbox.put(None)
        for worker in pool:
            worker.proc.join(timeout=10)
            if worker.proc.is_alive():
                worker.proc.kill()
    return statuses


RAY_RETRIES = 2  # a task whose worker process dies is run again this many times before its runs fail


def run_ray(jobs: list[list[Run]], root: Path, address: str | None) -> list[str]:
    """Each job is a Ray task of one CPU; `root` and the config files must be on a filesystem every node sees."""
    try:
        import ray
    except ImportError:
        raise ConfigError("executor: ray is not installed; pip install 'testbed[ray]'") from None
    local = {} if address else {"_node_ip_address": "127.0.0.1", "include_dashboard": False}
    ray.init(address=address, log_to_driver=False, **local)
    try:
        task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(_ray_job)
        refs = {task.remote(job, root): job for job in jobs}
        pending, statuses = list(refs), []
        with tqdm(total=sum(map(len, jobs)), desc="runs", unit="run") as bar:
            while pending:
                (done,), pending = ray.wait(pending, num_returns=1)
                try:
                    finished = ray.get(done)
                except ray.exceptions.WorkerCrashedError:  # died RAY_RETRIES + 1 times
                    finished = _lost(refs[done], root, f"crashed {RAY_RETRIES + 1} times")
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
    root = (out / sweep.name).resolve()
    runs = staged_runs(sweep, root)  # every run parses before anything starts
    unique: dict[str, Run] = {}
    for run in runs:
        unique.setdefault(run.id, run)  # entries that resolve to one config run once, under the first's labels
    runs = list(unique.values())
    pending = stale(runs, root)  # not done, or a child of a parent that runs again
    print(f"sweep {sweep.name}: {len(runs)} runs, {len(runs) - len(pending)} already done, in {root}")
    if dry_run:
        for run in runs:
            print(run.id, run.axes, f"seed={run.seed}", *([f"stage={run.stage}"] if run.stage else []))
        return Counter()
    write_manifest(root, sweep.name, config, runs)
    forget(pending, root)
    jobs = packs(pending) if sweep.pack else [[run] for run in pending]
    if sweep.pack and pending:
        print(f"packing: {pack_summary(jobs)}; packing needs runs that differ only in their seed and lr, weight_decay "
              "or eta, of ERM, Oracle, GroupDRO or ReWeight on an mlp or cnn backbone, with no callback but Plateau, "
              "without validation or checkpoints, on the CPU")
    statuses = []
    for wave in waves(pending, sweep):  # stages in dependency order; a sweep without stages is one wave
        lost = orphans(wave, root)
        ready = [run for run in wave if run.id not in {r.id for r in lost}]
        jobs = packs(ready) if sweep.pack else [[run] for run in ready]
        statuses += ["failed"] * len(lost)
        if jobs:
            statuses += run_ray(jobs, root, address) if executor == "ray" else run_local(jobs, root, workers)
        release(runs, root, sweep.keep_checkpoints)
    counts = Counter(statuses)
    print(f"sweep {sweep.name}: {counts['done']} ran, {counts['failed']} failed, "
          f"{len(runs) - len(pending)} skipped; results in {root}")
    for run in pending:
        if (root / run.id / "error.txt").exists():
            print(f"  failed: {run.id} {run.axes} seed={run.seed}: see {root / run.id / 'error.txt'}")
    return counts

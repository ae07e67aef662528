"""Where a sweep's runs execute: in this process, in long-lived local worker processes, on Ray, or as SLURM job
arrays through submitit.

No executor starts a new Python per run: imports cost seconds, a small run less than that. Every executor runs
`execute_job` on the pending jobs `run_sweep` hands it, so a run's folder, its skip-if-done and its retry are the
same under each.
"""

import contextlib
import multiprocessing as mp
import os
import queue
import shlex
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from tqdm import tqdm

from testbed.errors import ConfigError, check_positive
from testbed.files import write_atomic
from testbed.quiet import quiet
from testbed.sweep.cluster import Cluster, cluster_settings, slurm_gpus
from testbed.sweep.folders import check_ids, write_manifest
from testbed.sweep.job import execute_job, pack_summary, packs
from testbed.sweep.resolve import ID_SCHEME, staged_runs
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


def gpu_slots(workers: int) -> list[str | None]:
    """The CUDA_VISIBLE_DEVICES of each local worker: one visible GPU each, round-robin over the GPUs this
    process sees (more workers than GPUs share them), as DomainBed's multi_gpu launcher gives each of its
    processes one GPU; None for every worker where there is no GPU."""
    import torch

    count = torch.cuda.device_count()  # reads the driver without creating a CUDA context in this process
    if count == 0:
        return [None] * workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",")][:count] if visible else [str(i) for i in range(count)]
    return [ids[i % count] for i in range(workers)]


@contextlib.contextmanager
def _visible(gpu: str | None) -> Iterator[None]:
    """This process's environment with CUDA_VISIBLE_DEVICES set to `gpu` (unchanged for None), for a child
    spawned inside it: a spawned process takes its environment at its start."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        yield
    finally:
        if gpu is not None:
            if before is None:
                del os.environ["CUDA_VISIBLE_DEVICES"]
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = before


class _Worker:
    """One long-lived worker process, pinned to `gpu` (a CUDA_VISIBLE_DEVICES value) where there are GPUs, and
    the job it holds (its index in the job list), if any."""

    def __init__(self, ctx: mp.context.SpawnContext, outbox: "mp.Queue", threads: int, gpu: str | None) -> None:
        self.inbox = ctx.SimpleQueue()
        self.proc = ctx.Process(target=_serve, args=(self.inbox, outbox, threads), daemon=True)
        with _visible(gpu):
            self.proc.start()
        self.gpu = gpu
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
    """Run the jobs in this process (one worker) or in `workers` spawned processes, each pinned to one GPU where
    there are GPUs (`gpu_slots`). A worker that dies is replaced, on its GPU, and its job run again on the fresh
    one; a job that kills its worker `LOCAL_TRIES` times fails, with the signal named, so a lost process never
    hangs the sweep. A dead worker is replaced only when a job is waiting for it (spawning one costs seconds)."""
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
    pool = [_Worker(ctx, outbox, threads, gpu) for gpu in gpu_slots(min(workers, len(jobs)))]
    todo, left = list(range(len(jobs))), set(range(len(jobs)))
    deaths: Counter = Counter()

    def finish(index: int, done: list[str]) -> None:
        left.discard(index)
        statuses.extend(done)
        bar.update(len(done))

    try:
        while left:
            for i, worker in enumerate(pool):
                if worker.job is None and todo:
                    if not worker.proc.is_alive():  # it died on its last job: replaced once a job waits for it
                        pool[i] = worker = _Worker(ctx, outbox, threads, worker.gpu)
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
            for worker in pool:
                if worker.job is not None and not worker.proc.is_alive():
                    deaths[worker.job] += 1
                    if deaths[worker.job] < LOCAL_TRIES:
                        todo.insert(0, worker.job)  # finished runs of the job are skipped on the retry
                    else:
                        how = f"{_ended(worker.proc.exitcode)} on each of {LOCAL_TRIES} tries"
                        finish(worker.job, _lost(jobs[worker.job], root, how))
                    worker.job = None
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


def ray_gpus(resources: dict[str, float], asked: float | None) -> float:
    """The GPUs each Ray task asks for: `asked`, else the cluster's GPUs over its CPUs. A task takes one CPU, so
    the default shares the GPUs out evenly among as many tasks as the cluster runs at once (several small runs to
    a GPU, each with its slice of its memory); 0 on a cluster without GPUs. Ray takes fractions to 4 decimals."""
    if asked is not None:
        return asked
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
    return min(1.0, int(gpus / cpus * 10**4) / 10**4) if gpus else 0.0


def run_ray(jobs: list[list[Run]], root: Path, address: str | None, gpus: float | None = None) -> list[str]:
    """Each job is a Ray task of one CPU and `ray_gpus` GPUs (Ray sets each task's CUDA_VISIBLE_DEVICES); `root`
    and the config files must be on a filesystem every node sees."""
    try:
        import ray
    except ImportError:
        raise ConfigError("executor: ray is not installed; pip install 'testbed[ray]'") from None
    local = {} if address else {"_node_ip_address": "127.0.0.1", "include_dashboard": False}
    ray.init(address=address, log_to_driver=False, **local)
    try:
        per_task = ray_gpus(ray.cluster_resources(), gpus)
        task = ray.remote(num_cpus=1, num_gpus=per_task, max_retries=RAY_RETRIES)(_ray_job)
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


# The signals on which an array task stops and is requeued: submitit's (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL
# says otherwise; its job script asks SLURM for it `signal_delay_s` before the time limit) and Lightning's SLURM
# requeue signal (SIGUSR1, `SLURMEnvironment.requeue_signal`). Lightning installs its own requeue handler, which
# saves an `hpc_ckpt` into the run folder and calls `scontrol requeue`, only where the signal has no handler yet:
# with one installed here, both signals take the one path below.
LIGHTNING_REQUEUE = signal.SIGUSR1


class _Preempted(BaseException):
    """Raised by the signal handler out of a run that is cut off: not an Exception, so `execute_job` does not
    record it as the run's failure; the run's folder stays without `done` and is redone on the requeue."""


class ArrayTask:
    """One array task: a job of the sweep (`execute_job`), with `cpus_per_task` torch threads. Preempted or at its
    time limit, it is requeued as itself (submitit's `checkpoint` protocol); the requeued task skips the runs
    that finished (their `done` markers) and redoes the one that was cut off: it resumes by run hash."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __call__(self, job: list[Run], root: Path) -> list[str]:
        from submitit import JobEnvironment

        _quiet_worker(self.threads)
        signals = {JobEnvironment._usr_sig(), LIGHTNING_REQUEUE}
        requeue = {sig: signal.getsignal(sig) for sig in signals}  # submitit's checkpoint-and-requeue handler

        def cut(signum: int, frame: FrameType | None) -> None:
            raise _Preempted(signum)

        for sig in signals:
            signal.signal(sig, cut)
        try:
            return execute_job(job, root)
        except _Preempted as stop:
            handler = requeue[stop.args[0]]
            if not callable(handler):  # the signal was Lightning's and submitit has no handler for it
                handler = requeue[JobEnvironment._usr_sig()]
            handler(stop.args[0], None)  # checkpoints (below) and requeues, then exits
            raise
        finally:
            for sig, handler in requeue.items():
                signal.signal(sig, handler)

    def checkpoint(self, job: list[Run], root: Path) -> Any:
        """What the requeued task runs: this task again, on the same job."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, job, root)


def submitit_executor(cluster: Cluster, folder: Path, name: str) -> Any:
    """submitit's SlurmExecutor, or its LocalExecutor for `backend: local` (or `auto` without `srun`), with the
    cluster's resources; its logs and pickles go to `folder/<job id>/`."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("executor: submitit is not installed; pip install 'testbed[slurm]'") from None
    backend = cluster.backend
    if backend == "auto":
        backend = "slurm" if submitit.SlurmExecutor.affinity() > 0 else "local"
    if backend == "local":
        executor = submitit.LocalExecutor(folder / "%j")
        executor.update_parameters(timeout_min=cluster.time, gpus_per_node=slurm_gpus(cluster))
        return executor
    try:
        executor = submitit.SlurmExecutor(folder / "%j")
    except RuntimeError:
        raise ConfigError("cluster.backend: slurm, but srun is not on PATH; run on a SLURM login node, or choose "
                          "one of auto, local") from None
    executor.update_parameters(**slurm_parameters(cluster, name))
    return executor


def slurm_parameters(cluster: Cluster, name: str) -> dict[str, Any]:
    """The SlurmExecutor parameters (sbatch options) of one array task."""
    params = {"job_name": name, "time": cluster.time, "cpus_per_task": cluster.cpus_per_task,
              "array_parallelism": cluster.array_parallelism, "partition": cluster.partition}
    if gpus := slurm_gpus(cluster):
        params["gpus_per_node"] = gpus
    return {k: v for k, v in params.items() if v is not None}


def job_script(cluster: Cluster, folder: Path, name: str, tasks: int) -> str:
    """The sbatch script `--executor submitit` submits for an array of `tasks` jobs, rendered by submitit's own
    renderer (`SlurmExecutor._make_submission_file_text` calls it; the executor itself needs `srun`), with the
    command its SlurmExecutor runs."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder / "%j"))])
    return _make_sbatch_string(command=command, folder=folder / "%j", map_count=tasks,
                               **slurm_parameters(cluster, name))


SUBMITIT_TRIES = LOCAL_TRIES  # an array task that ends without a result is submitted once more


def run_submitit(jobs: list[list[Run]], root: Path, cluster: Cluster, name: str) -> list[str]:
    """The jobs as one job array; then the jobs whose task ended without a result (killed: out of memory, a node
    lost, cancelled) as one more array, their finished runs skipped; a job lost `SUBMITIT_TRIES` times fails.
    `root` must be on a filesystem the nodes share."""
    from submitit.helpers import as_completed

    executor = submitit_executor(cluster, root / ".submitit", name)
    task, statuses, todo = ArrayTask(cluster.cpus_per_task), [], jobs
    with tqdm(total=sum(map(len, jobs)), desc="runs", unit="run") as bar:
        for attempt in range(1, SUBMITIT_TRIES + 1):
            array = executor.map_array(task, todo, [root] * len(todo))
            tqdm.write(f"submitit: {len(array)} array tasks submitted ({array[0].job_id.split('_')[0]}); logs in "
                       f"{root / '.submitit'}")
            retry, job_of = [], {id(sub): job for sub, job in zip(array, todo)}
            for ended in as_completed(array, poll_frequency=1):
                job = job_of[id(ended)]
                try:
                    finished = ended.result()
                except Exception as err:  # submitit's errors for a task that left no result
                    if attempt < SUBMITIT_TRIES:
                        retry.append(job)
                        continue
                    cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    finished = _lost(job, root, f"ended without a result on each of {SUBMITIT_TRIES} tries ({cause})")
                statuses += finished
                bar.update(len(finished))
            if not (todo := retry):
                break
    return statuses


EXECUTORS = ("local", "ray", "submitit")


def run_sweep(config: Path, out: Path, executor: str = "local", workers: int = 1,
              address: str | None = None, dry_run: bool = False, cluster: dict[str, Any] | None = None) -> Counter:
    """Expand the sweep, check every run's config, then run those not yet done. `cluster` holds the command
    line's resources (None for unset), over the sweep file's `cluster:` block."""
    check_positive("workers", workers)
    if executor not in EXECUTORS:
        raise ConfigError(f"executor: {executor!r} is not allowed; choose one of {', '.join(EXECUTORS)}")
    sweep = load_sweep(config)
    resources = cluster_settings(sweep.cluster, cluster)
    # Packing trains on the CPU (`pack_key`: no CUDA visible), judged here; array tasks that are given GPUs run
    # their runs one by one on them.
    pack = sweep.pack and not (executor == "submitit" and slurm_gpus(resources))
    root = (out / sweep.name).resolve()
    check_ids(root, ID_SCHEME)
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
        if executor == "submitit" and pending:
            first = waves(pending, sweep)[0]
            tasks = len(packs(first) if pack else first)
            print(f"job script of the first array ({tasks} tasks; each later stage wave is one more array):")
            print(job_script(resources, root / ".submitit", sweep.name, tasks))
        return Counter()
    write_manifest(root, sweep.name, config, runs, ID_SCHEME)
    forget(pending, root)
    jobs = packs(pending) if pack else [[run] for run in pending]
    if pack and pending:
        print(f"packing: {pack_summary(jobs)}; packing needs runs that differ only in their seed and lr, weight_decay "
              "or eta, of ERM, Oracle, GroupDRO or ReWeight on an mlp or cnn backbone, with no callback but Plateau, "
              "without validation or checkpoints, on the CPU")
    statuses = []
    for wave in waves(pending, sweep):  # stages in dependency order; a sweep without stages is one wave
        lost = orphans(wave, root)
        ready = [run for run in wave if run.id not in {r.id for r in lost}]
        jobs = packs(ready) if pack else [[run] for run in ready]
        statuses += ["failed"] * len(lost)
        if jobs and executor == "ray":
            statuses += run_ray(jobs, root, address, resources.gpus)
        elif jobs and executor == "submitit":
            statuses += run_submitit(jobs, root, resources, sweep.name)
        elif jobs:
            statuses += run_local(jobs, root, workers)
        release(runs, root, sweep.keep_checkpoints)
    counts = Counter(statuses)
    print(f"sweep {sweep.name}: {counts['done']} ran, {counts['failed']} failed, "
          f"{len(runs) - len(pending)} skipped; results in {root}")
    for run in pending:
        if (root / run.id / "error.txt").exists():
            print(f"  failed: {run.id} {run.axes} seed={run.seed}: see {root / run.id / 'error.txt'}")
    return counts

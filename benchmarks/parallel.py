"""Parallel workers: quickstart runs through 2 long-lived worker processes of 1 thread each (`--workers 2`)
vs 1 process of 2 threads (`--workers 1`), on this 2-core machine. The pool is started and warmed up
before timing, as a sweep's long-lived workers are after their first run.

    .venv/bin/python benchmarks/parallel.py [--runs 8] [--repeats 3]
"""

import argparse
import multiprocessing as mp
import tempfile
from pathlib import Path

from common import interleaved, pin_threads, report, timed

from testbed.sweep import Run, expand, load_sweep
from testbed.sweep.executors import _quiet_worker
from testbed.sweep.job import execute, execute_job
from testbed.sweep.resolve import identify

ROOT = Path(__file__).resolve().parents[1]



def _execute(job: tuple[list[Run], Path]) -> list[str]:
    return execute_job(*job)

def small_runs(n: int) -> list[Run]:
    """The first `n` quickstart runs of the two smallest models."""
    runs = [r for r in expand(load_sweep(ROOT / "configs/sweeps/quickstart.yaml")) if r.axes["model.width"] <= 32]
    runs = runs[:n]
    identify(runs)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    _quiet_worker(2)
    pin_threads(2)
    runs = small_runs(args.runs)
    with tempfile.TemporaryDirectory() as tmp, mp.get_context("spawn").Pool(2, _quiet_worker, (1,)) as pool:
        fresh = lambda: Path(tmp) / f"r{len(list(Path(tmp).iterdir()))}"  # noqa: E731  (new sweep folder)
        pool.map(_execute, [([run], fresh()) for run in runs[:2]], chunksize=1)  # imports and first-run warm-up

        def one_process() -> None:
            root = fresh()
            for run in runs:
                execute(run, root)

        def two_workers() -> None:
            root = fresh()
            pool.map(_execute, [([run], root) for run in runs], chunksize=1)

        times = interleaved({"1 worker x 2 threads": lambda: timed(one_process),
                             "2 workers x 1 thread": lambda: timed(two_workers)}, repeats=args.repeats)
    print(f"parallel workers: {len(runs)} quickstart runs (widths 8 and 32) per round, {args.repeats} interleaved "
          "rounds; throughput gain = 1 / ratio (target >= 1.1x):")
    report(times, unit=1.0, label="s")


if __name__ == "__main__":
    main()

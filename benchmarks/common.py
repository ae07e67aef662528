"""Timing shared by the benchmarks: pinned threads, warm-up excluded, A/B repeats interleaved, median and min.

The machine is shared, so each variant runs once per round, in alternating order, and the figures are the
median and the minimum over rounds: a burst of load elsewhere slows both variants of a round alike.
`--clock cpu` times the process's CPU time instead of the wall clock: other jobs' load barely moves it
(with one thread it is the wall time of a quiet machine; with more it sums the threads).
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch


def pin_threads(n: int) -> None:
    """Fix torch's intra-op threads (and inter-op threads when still settable) for reproducible timings."""
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass
    os.environ["OMP_NUM_THREADS"] = str(n)


def bench_args(doc: str | None, repeats: int, **extra: int | str) -> argparse.Namespace:
    """Parse a benchmark's `--repeats`, `--threads` and its own options (`extra`: name -> default, an int or a
    string), then pin the thread count."""
    parser = argparse.ArgumentParser(description=doc)
    for name, default in extra.items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall")
    args = parser.parse_args()
    pin_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]
    return args


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter  # set by `bench_args`


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of `fn` takes, by the chosen clock."""
    start = clock()
    fn()
    return clock() - start


def interleaved(variants: dict[str, Callable[[], float]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each variant over `repeats` rounds, after `warmup` untimed rounds; the order of the variants
    alternates between rounds. A variant returns the seconds of its timed section (set-up stays outside)."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(variants[name]())
    return times


def report(times: dict[str, list[float]], unit: float = 1e-3, label: str = "ms") -> None:
    """Print the median and min of each variant, and the ratio of each to the first one."""
    names = list(times)
    base_med, base_min = statistics.median(times[names[0]]), min(times[names[0]])
    for name in names:
        med, low = statistics.median(times[name]), min(times[name])
        print(f"  {name:<34} median {med / unit:9.2f} {label}   min {low / unit:9.2f} {label}"
              f"   ratio median {med / base_med:5.3f}  min {low / base_min:5.3f}")

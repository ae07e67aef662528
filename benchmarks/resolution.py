"""Config resolution's share of a sweep: `staged_runs` (parse, set each run's seeds and draws, hash, check each
distinct class configuration once) on the quickstart's 252 runs and on a packed sweep of 16 small runs (4 lr
draws x 4 seeds, ERM MLP width 8, n_train 4096, 4 epochs), against the whole packed sweep of those 16 runs
(resolve, build, train, test, write) in this process. "one parse per run" resolves as jsonargparse alone would
(a parse and a dump for every run) for comparison. Run it with another checkout's interpreter to time that
code's `identify` on the same sweeps (the ids differ between id schemes; the work timed is the same).

    .venv/bin/python benchmarks/resolution.py [--repeats 3] [--threads 1] [--clock cpu]
"""

import contextlib
import hashlib
import io
import json
import logging
import statistics
import tempfile
from pathlib import Path

import yaml
from common import bench_args, interleaved, report, timed

import testbed.sweep.executors
from testbed.run.config import resolver
from testbed.sweep import load_sweep, resolve
from testbed.sweep.executors import run_sweep
from testbed.sweep.spec import Loader, Run

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"name": "s", "seeds": [0, 1, 2, 3], "hparams": {"model.lr": {"low": 1e-4, "high": 1e-2, "log": True}},
         "draws": 4, "args": {"model": "ERM", "data": "SpuriousShapes", "model.arch": "mlp", "model.width": 8,
                              "data.n_train": 4096, "data.n_val": 250, "data.n_test": 500, "model.probe": False,
                              "data.batch_size": 1024, "trainer.max_epochs": 4, "trainer.limit_val_batches": 0,
                              "trainer.enable_checkpointing": False}}


def per_run(runs: list[Run]) -> None:
    """Every run parsed (seeds aside) and dumped by jsonargparse, its classes checked once per configuration."""
    parser, parsed, checked = resolver(), {}, set()
    for run in runs:
        key = tuple(arg for arg in run.argv if arg not in resolve.seed_args(run))
        if key not in parsed:
            parsed[key] = parser.parse_args(run.argv)
        config = resolve.with_values(parsed[key], resolve.seeded(run, {}))
        run.config = yaml.load(parser.dump(config, skip_none=False, skip_validation=True), Loader=Loader)
        run.id = hashlib.sha1(json.dumps(run.config, sort_keys=True).encode()).hexdigest()[:12]
        classes = json.dumps([run.config["model"], run.config["data"]["init_args"].get("n_train")], sort_keys=True)
        if classes not in checked:
            parser.instantiate_classes(config)
            checked.add(classes)
        resolve.check_trainer(run.config["trainer"])


def resolving(path: Path, slow: bool) -> float:
    sweep, fast = load_sweep(path), resolve.identify
    if slow:
        resolve.identify = per_run
    try:
        return timed(lambda: resolve.staged_runs(sweep, Path(tempfile.gettempdir()) / "resolution"))
    finally:
        resolve.identify = fast


def main() -> None:
    args = bench_args(__doc__, repeats=3)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    testbed.sweep.executors._quiet_worker = lambda threads: None  # keep the pinned thread count
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "s.yaml"
        small.write_text(json.dumps(SMALL))
        rounds = iter(range(10**6))
        whole = lambda: timed(lambda: run_sweep(small, Path(tmp) / str(next(rounds))))  # noqa: E731
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            times = interleaved({"whole packed sweep": whole, "identify": lambda: resolving(small, False),
                                 "one parse per run": lambda: resolving(small, True)}, repeats=args.repeats)
        print(f"sweep of 16 runs (4 lr draws x 4 seeds, ERM mlp width 8, n_train 4096, 4 epochs), packed, "
              f"{args.threads} thread(s), {args.repeats} rounds:")
        report(times, unit=1, label="s")
        whole_s = statistics.median(times["whole packed sweep"])
        for name in ("identify", "one parse per run"):
            print(f"  resolution's share of the whole sweep ({name}): {statistics.median(times[name]) / whole_s:.1%}")
    quick = ROOT / "configs/sweeps/quickstart.yaml"
    with contextlib.chdir(ROOT), contextlib.redirect_stderr(io.StringIO()):
        times = interleaved({"identify": lambda: resolving(quick, False),
                             "one parse per run": lambda: resolving(quick, True)}, repeats=args.repeats)
        n = len(resolve.staged_runs(load_sweep(quick), Path(tempfile.gettempdir()) / "resolution"))
    print(f"resolving the quickstart's {n} runs:")
    report(times, unit=1, label="s")


if __name__ == "__main__":
    main()

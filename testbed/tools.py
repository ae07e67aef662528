"""The model-free commands: `sweep`, `collect`, `plot` and `report`. Heavy imports happen per command."""

import argparse
from collections.abc import Callable
from pathlib import Path

from testbed.errors import ConfigError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise ConfigError(message)


def sweep(argv: list[str]) -> None:
    p = _Parser(prog="testbed sweep", description="Run a sweep of baselines x scales x seeds, resumably.")
    p.add_argument("-c", "--config", required=True, type=Path, help="sweep YAML, e.g. configs/sweeps/quickstart.yaml")
    p.add_argument("--out", default=Path("runs/sweeps"), type=Path, help="runs go to OUT/<sweep name>/<run hash>/")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--workers", type=int, default=1, help="local executor: long-lived worker processes")
    p.add_argument("--address", default=None, help="ray executor: cluster address (e.g. auto); default: a local Ray")
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    a = p.parse_args(argv)
    from testbed.executors import run_sweep

    counts = run_sweep(a.config, a.out, a.executor, a.workers, a.address, a.dry_run)
    if counts["failed"]:
        raise SystemExit(1)


def _sweep_dir(prog: str, description: str, argv: list[str]) -> Path:
    p = _Parser(prog=f"testbed {prog}", description=description)
    p.add_argument("sweep_dir", type=Path, help="a sweep's folder, e.g. runs/sweeps/quickstart")
    directory = p.parse_args(argv).sweep_dir
    if not directory.is_dir():
        raise ConfigError(f"sweep_dir: {str(directory)!r} is not a folder; give OUT/<sweep name> of a sweep")
    return directory


def collect(argv: list[str]) -> None:
    from testbed.collect import collect as collect_runs
    from testbed.collect import save_table

    directory = _sweep_dir("collect", "Gather a sweep's runs into one tidy table (results.csv).", argv)
    print(f"table: {save_table(collect_runs(directory), directory)}")


def plot(argv: list[str]) -> None:
    from testbed.plots import plot_sweep

    directory = _sweep_dir("plot", "Draw a sweep's scaling curves (PNG and PDF in figures/).", argv)
    for path in plot_sweep(directory):
        print(f"figure: {path}")


def report(argv: list[str]) -> None:
    from testbed.report import write_report

    directory = _sweep_dir("report", "Write a Markdown report with trend fits and verdicts.", argv)
    print(f"report: {write_report(directory)}")


TOOLS: dict[str, Callable[[list[str]], None]] = {"sweep": sweep, "collect": collect, "plot": plot, "report": report}

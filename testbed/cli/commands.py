"""The model-free commands: `sweep`, `collect`, `plot` and `report`. Each imports what it needs when it runs:
`collect`, `plot` and `report` read files and never import torch or Lightning."""

import argparse
import shutil
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
    p.add_argument("--executor", choices=["local", "ray", "submitit"], default="local",
                   help="local: this process or --workers processes (one GPU each where there are GPUs); ray: a Ray "
                        "cluster; submitit: SLURM job arrays")
    p.add_argument("--workers", type=int, default=1, help="local executor: long-lived worker processes")
    p.add_argument("--address", default=None, help="ray executor: cluster address (e.g. auto); default: a local Ray")
    cluster = p.add_argument_group("cluster resources (over the sweep file's cluster: block)")
    cluster.add_argument("--backend", default=None, help="submitit: slurm, local (local processes) or auto (slurm "
                                                         "where srun is found)")
    cluster.add_argument("--partition", default=None, help="submitit: SLURM partition")
    cluster.add_argument("--time", type=int, default=None, help="submitit: minutes per array task (default 60)")
    cluster.add_argument("--gpus", type=float, default=None,
                         help="submitit: GPUs per array task; ray: GPUs per task, a fraction to share a GPU "
                              "(default: the cluster's GPUs over its CPUs)")
    cluster.add_argument("--cpus-per-task", type=int, default=None, help="submitit: CPUs per array task (default 1)")
    cluster.add_argument("--array-parallelism", type=int, default=None,
                         help="submitit: array tasks running at once (default 256)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs (and, with --executor submitit, print the job script) and exit")
    p.add_argument("--redo-older", action="store_true",
                   help="run again the done runs that another version of the code made (their run.json says which)")
    a = p.parse_args(argv)
    if a.out.exists() and not a.out.is_dir():
        raise ConfigError(f"out: {str(a.out)!r} is a file; give a folder for the sweeps' runs")
    from testbed.sweep.executors import run_sweep

    if a.redo_older and not a.dry_run:
        from testbed.sweep.folders import redo_older
        from testbed.sweep.spec import load_sweep

        print(f"redo-older: {redo_older(a.out / load_sweep(a.config).name)} runs made by other code will run again")

    flags = {k: getattr(a, k) for k in ("backend", "partition", "time", "gpus", "cpus_per_task", "array_parallelism")}
    used = {"local": (), "ray": ("gpus",), "submitit": tuple(flags)}[a.executor]
    for key in (k for k, v in flags.items() if v is not None and k not in used):
        raise ConfigError(f"--{key.replace('_', '-')}: a cluster resource, not used by --executor {a.executor}; "
                          f"it applies to --executor {'submitit or ray' if key == 'gpus' else 'submitit'}")
    counts = run_sweep(a.config, a.out, a.executor, a.workers, a.address, a.dry_run, flags)
    if counts["failed"]:
        raise SystemExit(1)


def _analysis(prog: str, description: str, argv: list[str], report: bool = False) -> argparse.Namespace:
    p = _Parser(prog=f"testbed {prog}", description=description)
    p.add_argument("sweep_dir", type=Path, help="a sweep's folder, e.g. runs/sweeps/quickstart")
    p.add_argument("--all", action="store_true", dest="all_runs",
                   help="read every finished run folder, not only the runs of the sweep file as last run "
                        "(manifest.json)")
    p.add_argument("--select", choices=["id_val", "val_wg", "oracle", "none"], default=None,
                   help="how one hyperparameter draw is chosen per scale point: id_val (held-out ID accuracy; the "
                        "default when there are draws), val_wg (held-out worst-group accuracy), oracle (shifted "
                        "accuracy: test-domain selection, an upper bound), none (draw 0)")
    p.add_argument("--select-per", choices=["point", "seed"], default=None,
                   help="point (default): one draw per scale point, on its mean over seeds; seed: one draw per scale "
                        "point and seed, as DomainBed's protocol, so that the selection's noise enters the spread")
    if report:
        p.add_argument("--reference", default=None,
                       help="the baseline the confusion gap is measured against (default: Oracle when present)")
        p.add_argument("--out", type=Path, default=None,
                       help="report from SWEEP_DIR/results.csv alone (not its run folders) into this folder, e.g. to "
                            "check that a published study (results/study) still gives its verdicts")
        p.add_argument("--confidence", type=float, default=0.95,
                       help="the level of each verdict's intervals, or with --familywise of all together (default "
                            "0.95)")
        p.add_argument("--familywise", choices=["none", "bonferroni"], default="none",
                       help="none: each verdict at --confidence; bonferroni: every interval widened to "
                            "1 - (1 - confidence) / m over the m verdicts the report writes, so that all hold "
                            "together at --confidence")
    a = p.parse_args(argv)
    if not a.sweep_dir.is_dir():
        raise ConfigError(f"sweep_dir: {str(a.sweep_dir)!r} is not a folder; give OUT/<sweep name> of a sweep")
    return a


def collect(argv: list[str]) -> None:
    from testbed.analysis.select import selected_runs

    a = _analysis("collect", "Gather a sweep's runs into one tidy table (results.csv) and the selection "
                             "(selected.csv).", argv)
    sel = selected_runs(a.sweep_dir, a.all_runs, a.select, per=a.select_per)
    print(f"selection: {sel.label}")
    print(f"table: {a.sweep_dir / 'results.csv'}\nselected: {a.sweep_dir / 'selected.csv'}")


def plot(argv: list[str]) -> None:
    from testbed.analysis.plots import plot_sweep
    from testbed.analysis.select import selected_runs

    a = _analysis("plot", "Draw a sweep's scaling curves (PNG and PDF in figures/).", argv)
    sel = selected_runs(a.sweep_dir, a.all_runs, a.select, per=a.select_per)
    print(f"selection: {sel.label}")
    if sel.runs.empty:
        print(f"figures: none: all {len(sel.degenerate)} selected runs predict one class (`testbed report` lists them)")
        return
    for path in plot_sweep(a.sweep_dir, sel.runs):
        print(f"figure: {path}")


def report(argv: list[str]) -> None:
    from testbed.analysis.report import write_report

    a = _analysis("report", "Write report.md: a verdict per regime and baseline, fits with bootstrap intervals, "
                            "accuracy on the line, the reference check.", argv, report=True)
    source = a.sweep_dir
    if a.out is not None:  # the published table alone, re-reported elsewhere
        if not (source / "results.csv").exists():
            raise ConfigError(f"sweep_dir: {str(source)!r} has no results.csv for --out to report from")
        a.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "results.csv", a.out / "results.csv")
        source = a.out
    elif (source / "results.csv").exists() and not any((d / "done").exists() for d in source.iterdir()):
        raise ConfigError(f"sweep_dir: {str(source)!r} holds a published results.csv and no run folders; give "
                          "--out DIR to write its report there instead of over the published one")
    path = write_report(source, a.all_runs, a.select, a.reference, confidence=a.confidence,
                        familywise=a.familywise, per=a.select_per)
    print(f"report: {path}")


COMMANDS: dict[str, Callable[[list[str]], None]] = {"sweep": sweep, "collect": collect, "plot": plot, "report": report}

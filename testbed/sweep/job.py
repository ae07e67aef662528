"""One job of a sweep: a run, or the runs of one pack, fitted into their folders (`testbed.sweep.folders`).

A job is what an executor hands a worker. Running a sweep again skips done runs and redoes half-written ones; a
failed run leaves `error.txt` without stopping the others and is tried again on the next invocation.
"""

import traceback
from pathlib import Path

from testbed.files import write_atomic
from testbed.run.fit import fit_resolved
from testbed.run.packing import fit_packed_runs, pack_key
from testbed.sweep.folders import start
from testbed.sweep.spec import Run
from testbed.sweep.stages import record_parent
from testbed.training.trainer import sweep_run


def execute(run: Run, root: Path) -> str:
    """Run one training run into `root/<id>/`; returns "done", "skipped" or "failed"."""
    return execute_job([run], root)[0]


def execute_job(runs: list[Run], root: Path) -> list[str]:
    """Run these runs into `root/<id>/`, as one packed job if there are several (runs of one `pack_key`);
    returns "done", "skipped" or "failed" for each. A failure fails the job's every run."""
    outs = {run.id: start(run, root) for run in runs}
    todo = [run for run in runs if outs[run.id] is not None]
    configs = [{**run.config, "trainer": {**run.config["trainer"], **sweep_run(outs[run.id])}} for run in todo]
    try:
        fit_packed_runs(configs) if len(configs) > 1 else [fit_resolved(c) for c in configs]
    except (Exception, SystemExit):
        for run in todo:
            write_atomic(outs[run.id] / "error.txt", traceback.format_exc())
        return ["skipped" if outs[run.id] is None else "failed" for run in runs]
    for run in todo:
        record_parent(run, outs[run.id])
        write_atomic(outs[run.id] / "done", "")
    return ["skipped" if outs[run.id] is None else "done" for run in runs]


def packs(runs: list[Run]) -> list[list[Run]]:
    """The runs grouped into jobs: those of one `pack_key` together (seeds and hyperparameter draws of one
    scale point), every other run alone."""
    jobs: dict[str, list[Run]] = {}
    for run in runs:
        jobs.setdefault(pack_key(run.config) or run.id, []).append(run)
    return list(jobs.values())


def pack_summary(jobs: list[list[Run]]) -> str:
    """What packs, per baseline: e.g. `8 runs train in 2 packed models (ERM 4, Oracle 4); 2 one by one (IRM 2)`."""
    def per_model(runs: list[Run]) -> str:
        names = [run.config["model"]["class_path"].rsplit(".", 1)[-1] for run in runs]
        counts = ", ".join(f"{name} {names.count(name)}" for name in sorted(set(names)))
        return f" ({counts})" if counts else ""

    packed = [run for job in jobs if len(job) > 1 for run in job]
    alone = [run for job in jobs if len(job) == 1 for run in job]
    return (f"{len(packed)} runs train in {sum(len(job) > 1 for job in jobs)} packed models{per_model(packed)}; "
            f"{len(alone)} one by one{per_model(alone)}")

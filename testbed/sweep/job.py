"""One job of a sweep: a run, or the runs of one pack, fitted into their folders (`testbed.sweep.folders`).

A job is what an executor hands a worker. Running a sweep again skips done runs and redoes half-written ones; a
failed run leaves `error.txt` without stopping the others and is tried again on the next invocation.
"""

import traceback
from pathlib import Path

from testbed.files import write_atomic
from testbed.sweep.fit import fit_resolved
from testbed.sweep.folders import start
from testbed.sweep.packing import fit_packed_runs
from testbed.sweep.spec import Run
from testbed.sweep.stages import record_parent
from testbed.trainer import sweep_run


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

"""Every setting testbed gives Lightning's Trainer, in one place: `fit`'s defaults, what each sweep run
overrides, which settings packed training can honour, and Lightning's refusals as one-line errors.

No Lightning import here: the sweep's spec layer and the error printer read these names cheaply.
"""

import inspect
import re
from pathlib import Path
from typing import Any

from testbed.errors import ConfigError

# `testbed fit`'s defaults where they differ from Lightning's: short runs, no sanity validation, no model
# summary, logs once per 10 steps into runs/.
FIT_DEFAULTS = {
    "max_epochs": 10,
    "num_sanity_val_steps": 0,
    "enable_model_summary": False,
    "log_every_n_steps": 10,
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
}

# Settings that may differ from Lightning's defaults in a packed job (`testbed.run.packing`) without changing
# what a fit computes, or that the packed loop honours (the budget: epochs, steps, a Plateau callback).
PACKABLE = {"max_epochs", "max_steps", "min_steps", "callbacks", "logger", "enable_progress_bar",
            "enable_model_summary", "enable_autolog_hparams", "num_sanity_val_steps", "log_every_n_steps",
            "limit_val_batches", "enable_checkpointing", "default_root_dir", "limit_test_batches", "accelerator",
            "devices"}


def sweep_run(out: Path) -> dict[str, Any]:
    """What every sweep run overrides: it logs into its folder `out` itself, without progress output, and
    without hparams.yaml (config.yaml holds the same; writing it costs a few ms per stage)."""
    csv = {"save_dir": str(out), "name": "", "version": "", "prefix": "", "flush_logs_every_n_steps": 100}
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": csv}
    return {"logger": logger, "enable_progress_bar": False, "enable_model_summary": False,
            "enable_autolog_hparams": False}


def trainer_error(err: BaseException) -> str:
    """Lightning's refusal of a Trainer setting as one line, naming the setting its message names first, or the
    accelerator where hardware or its library is missing."""
    from lightning import Trainer  # only on this error path: the rest of this module needs no Lightning

    params = inspect.signature(Trainer).parameters
    message = " ".join(str(err).split())
    found = {m.start(): p for p in params if (m := re.search(rf"\b{p}\b", message))}
    field = found[min(found)] if found else (
        "accelerator" if re.search(r"gpu|cuda|mps|tpu|xla|hpu|backend", message, re.IGNORECASE) else "")
    return f"trainer{'.' + field if field else ''}: {message}"


def check_run_folder(folder: Path) -> None:
    """The run's folder can be made: no file stands where it or one of its parents must be a folder."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"trainer.logger: the run folder {folder} cannot be made: {parent} is a file, "
                                  "not a folder; give another save_dir or default_root_dir")
            return

"""Lightning's output that says nothing to a user of this tool, silenced: `testbed` and every sweep worker call
`quiet` before they train (`--verbose` shows it all again). Only logger names and warning texts: no imports."""

import logging
import warnings

# Lightning's messages that say nothing to a user of this tool: advertising, and the absence of accelerators.
NOISE = ("💡 Tip", "GPU available: False", "TPU available: False", "HPU available: False", "`Trainer.fit` stopped",
         "Restoring states from the checkpoint path")


class QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE)


def quiet(verbose: bool) -> None:
    """Drop Lightning's known noise (or, `verbose`, show every warning again, once per place)."""
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)  # no "Seed set to 0"
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    for f in [f for f in rank_zero.filters if isinstance(f, QuietFilter)]:
        rank_zero.removeFilter(f)
    if verbose:  # also undo a quiet sweep worker's levels, in this process (testbed.sweep.executors)
        for name in ("lightning.pytorch", "lightning.fabric", "lightning.fabric.utilities.seed"):
            logging.getLogger(name).setLevel(logging.INFO)
        warnings.simplefilter("default")
        return
    rank_zero.addFilter(QuietFilter())
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # sweeps give argv on purpose
    warnings.filterwarnings("ignore", message="Experiment logs directory")  # a sweep run's folder has run.json
    # Known to be harmless here (`--verbose` shows them again): Lightning's own use of a deprecated torch name, and
    # its advice to log more often than once per epoch, which Baseline does on purpose (testbed/training/module.py).
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message="The number of training batches")
    warnings.filterwarnings("ignore", message="The dirpath has changed from")  # `test` of a checkpoint: a new version

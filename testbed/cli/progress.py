"""The progress output of `fit`: Lightning's bars on a terminal; one line per epoch when stdout is a file or a pipe,
where a bar that redraws itself would leave kilobytes of carriage returns (21 KB for a 3-epoch log)."""

import sys
import time

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar

# The metrics an epoch's line shows, where logged.
SHOWN = ("train/loss", "train/acc", "val/acc_id", "val/acc_avg", "val/acc_wg")


class EpochProgress(TQDMProgressBar):
    """Lightning's tqdm bars when stdout is a terminal, else `epoch 2/10: train/loss 0.512, ... (1.3 s)` per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.lines = not sys.stdout.isatty()
        if self.lines:
            self.disable()
        self._epoch_start = 0.0
        self._ended: tuple[int, float] | None = None

    def _print_epoch(self, trainer: Trainer) -> None:
        """The line of the epoch that just ended; printed once the module has logged its training loss, which it
        does in its own `on_train_epoch_end`, after the callbacks' (so: at the next epoch's start, or at the end)."""
        if self._ended is None or not trainer.is_global_zero:
            return
        epoch, seconds = self._ended
        metrics = trainer.callback_metrics
        shown = ", ".join(f"{k} {float(metrics[k]):.4f}" for k in SHOWN if k in metrics)
        total = trainer.max_epochs if trainer.max_epochs not in (None, -1) else "?"
        print(f"epoch {epoch + 1}/{total}: {shown} ({seconds:.1f} s)", flush=True)
        self._ended = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self.lines:
            self._print_epoch(trainer)
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._ended = (trainer.current_epoch, time.perf_counter() - self._epoch_start)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.lines:
            self._print_epoch(trainer)

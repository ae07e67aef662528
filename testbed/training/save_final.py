"""SaveFinal: a callback that saves a run's final weights, where a later sweep stage's runs start from them."""

from pathlib import Path

import lightning as L
import torch


class SaveFinal(L.Callback):
    """Saves the model's final weights (after training, before testing) to `path`, atomically, in the form
    `Baseline.load_weights` reads (`{"state_dict": ...}`)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            torch.save({"state_dict": pl_module.state_dict()}, tmp)
            tmp.replace(self.path)

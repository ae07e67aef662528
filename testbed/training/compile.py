"""Opt-in `torch.compile` of a run's network, as a Trainer callback:
`--trainer.callbacks+=testbed.training.compile.Compile` (in a sweep: `trainer.callbacks`).

A callback rather than a model argument: Lightning has no Trainer flag for it, a callback is how a Lightning
user adds such behaviour to any model, and the model's arguments (which make every sweep run's id) stay as
they are. The network is compiled in place (`nn.Module.compile`), so its weights keep their names in
checkpoints, and everything the model does around it (losses, metrics, interventions, the probe) runs as
before. Compiling costs seconds to minutes at the first step; it pays on a GPU with large models, rarely for
the testbed's small CPU models. Runs with it train one by one in a sweep (packing refuses other callbacks).
"""

import lightning as L
from lightning.pytorch.callbacks import Callback

from testbed.errors import check_choice
from testbed.training.compat import is_compiled

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class Compile(Callback):
    """Compile the model's network with `torch.compile` before training or testing.

    Args:
        mode: torch.compile's mode (`default`, `reduce-overhead`, `max-autotune`, `max-autotune-no-cudagraphs`).
        dynamic: whether to compile for varying input shapes (None: torch decides, after a shape changes).
        backend: torch.compile's backend (`inductor`, its default, generates kernels; `aot_eager` only traces).
    """

    def __init__(self, mode: str = "default", dynamic: bool | None = None, backend: str = "inductor") -> None:
        check_choice("Compile.mode", mode, list(MODES))
        self.mode, self.dynamic, self.backend = mode, dynamic, backend

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        net = pl_module.net
        if not is_compiled(net):  # once, whether fit, test or both run
            mode = self.mode if self.backend == "inductor" else None  # modes are inductor's
            net.compile(mode=mode, dynamic=self.dynamic, backend=self.backend)

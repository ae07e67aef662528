"""The plug-in contract, checked before a run writes anything: what a `ShiftedEnv` declares, and that the batches
its `make` returns and its `intervene` renders fit what it declares. A broken plug-in then fails with one line that
names the method and what is wrong, not with a traceback from inside training (`mat1 and mat2 shapes cannot be
multiplied`)."""

import torch
from torch import Tensor

from testbed.envs.base import Batch, ShiftedEnv
from testbed.errors import ConfigError

DECLARED = {
    "n_classes": "the number of classes, e.g. `n_classes = 2`",
    "input_shape": "the shape of one input, e.g. `input_shape = (3, 28, 28)`",
    "specs": "its sub-environments, e.g. `self.specs = [EnvSpec('train', 0.9), EnvSpec('id', 0.9), "
             "EnvSpec('ood', 0.1)]` in `__init__`",
}


def check_declared(env: ShiftedEnv) -> None:
    """What the model is built from and what `setup` asks `make` for: checked as the model is linked to `env`."""
    name = type(env).__name__
    for field, what in DECLARED.items():
        if not hasattr(env, field):
            raise ConfigError(f"data: {name} does not set `{field}`, {what}")
    if type(env).make is ShiftedEnv.make and type(env).setup is ShiftedEnv.setup:  # or it fills `data` itself
        raise ConfigError(f"data: {name} does not implement make(self, spec, index, split), which returns the Batch "
                          "of one sub-environment")
    env.check_specs()


def check_contract(env: ShiftedEnv) -> None:
    """Make every sub-environment (Lightning's own `setup` then finds them made) and check each batch and each
    declared intervention against what `env` declares."""
    check_declared(env)
    env.setup("fit")
    for split, data in (("train or test", env.data), ("val", env.val_data)):
        for sub, batch in data.items():
            check_batch(env, batch, f"{type(env).__name__}.make for {sub!r} ({split})")
    held_out = next((b for n, b in env.data.items() if n not in env.names("train") and len(b.x)), None)
    if held_out is not None:
        check_interventions(env, Batch(*(t[:8] for t in held_out)))


def check_batch(env: ShiftedEnv, batch: Batch, where: str) -> None:
    if not isinstance(batch, Batch):
        raise ConfigError(f"data: {where} returns a {type(batch).__name__}; return a Batch(x, y, a, e, z)")
    shape = tuple(batch.x.shape[1:])
    if shape != tuple(env.input_shape):
        raise ConfigError(f"data: {where} returns inputs of shape {shape}, but input_shape is "
                          f"{tuple(env.input_shape)}")
    for field in ("y", "a", "e", "z"):
        if len(getattr(batch, field)) != len(batch.x):
            raise ConfigError(f"data: {where} returns {len(batch.x)} inputs but {len(getattr(batch, field))} "
                              f"values of {field}; give one per sample")
    for field, high in (("y", env.n_classes), ("a", env.n_attr)):
        check_labels(getattr(batch, field), high, f"{where}: {field}")


def check_labels(values: Tensor, high: int, where: str) -> None:
    if values.is_floating_point() or values.dim() != 1:
        raise ConfigError(f"data: {where} must be one integer per sample (a {values.dtype} tensor of shape "
                          f"{tuple(values.shape)} was given)")
    if len(values) and (int(values.min()) < 0 or int(values.max()) >= high):
        raise ConfigError(f"data: {where} has values in [{int(values.min())}, {int(values.max())}], outside the "
                          f"allowed range [0, {high - 1}]")


def check_interventions(env: ShiftedEnv, batch: Batch) -> None:
    """Each intervention `env` lists renders inputs of the batch's shape (a few held-out samples, set to their own
    values)."""
    name = type(env).__name__
    for factor in env.interventions:
        if factor not in ("a", "causal"):
            raise ConfigError(f"data: {name}.interventions: {factor!r} is not allowed; choose from a, causal")
        try:
            value = batch.a if factor == "a" else env.causal(batch)
            x = env.intervene(batch, **{factor: value})
        except NotImplementedError:
            raise ConfigError(f"data: {name} lists {factor!r} in `interventions`, but its intervene"
                              f"{'' if factor == 'a' else ' or causal'} is not implemented; implement it, or leave "
                              f"{factor!r} out (then the metrics that intervene on it are not computed)") from None
        if not isinstance(x, torch.Tensor) or x.shape != batch.x.shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(f"data: {name}.intervene({factor}=...) returns {got}; it must return inputs of the "
                              f"batch's shape {tuple(batch.x.shape)}")

"""Checkpoint files named on the command line, checked before anything is built or written."""

from pathlib import Path

import torch

from testbed.errors import ConfigError

# `ckpt_path` values that Lightning resolves itself (the best or last checkpoint of this trainer, a cluster's).
LIGHTNING_NAMES = ("best", "last", "hpc")


def read_checkpoint(field: str, path: str | Path) -> dict:
    """The contents of the Lightning checkpoint at `path` (tensors memory-mapped, not read), or a ConfigError that
    names `field` and says why `path` is not one: absent, a folder, not a checkpoint, or cut short."""
    file = Path(path)
    if not file.is_file():
        what = "is a folder" if file.is_dir() else "does not exist"
        raise ConfigError(f"{field}: {str(path)!r} {what}; give a .ckpt file that `testbed fit` wrote "
                          "(runs/.../checkpoints/*.ckpt)")
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises several types for a file that is not one, or is cut short
        if "Weights only load failed" in str(err):  # a whole checkpoint with objects beyond tensors (Lightning's
            return {"state_dict": None}  # own loader reads it; `init_ckpt` refuses it)
        cause = " ".join(str(err).split())[:120]
        raise ConfigError(f"{field}: {str(path)!r} is not a checkpoint or is cut short ({cause})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"{field}: {str(path)!r} is not a Lightning checkpoint (it holds no state_dict)")
    return ckpt


def check_ckpt_path(subcommand: str, path: str | None) -> None:
    """`test` needs a checkpoint to test; any `ckpt_path` given must be one."""
    if path is None:
        if subcommand == "test":
            raise ConfigError("ckpt_path: required by test; give the .ckpt file that `testbed fit` wrote "
                              "(runs/.../checkpoints/*.ckpt)")
        return
    if path not in LIGHTNING_NAMES and not str(path).startswith("registry"):
        read_checkpoint("ckpt_path", path)

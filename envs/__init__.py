"""Shifted environments with controllable spurious correlates (installed as `testbed.envs`)."""

from testbed.envs.base import Batch, EnvSpec, ShiftedEnv, TensorLoader
from testbed.envs.shapes import SpuriousShapes

__all__ = ["Batch", "EnvSpec", "ShiftedEnv", "SpuriousShapes", "TensorLoader"]

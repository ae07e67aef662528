"""Shifted environments with controllable spurious correlates (installed as `testbed.envs`)."""

from testbed.envs.base import Batch, EnvSpec, ShiftedEnv, Split, TensorLoader
from testbed.envs.braking import Braking
from testbed.envs.celeba import CelebA
from testbed.envs.civil_comments import CivilComments
from testbed.envs.colored_mnist import ColoredMNIST
from testbed.envs.gaussian_groups import GaussianGroups
from testbed.envs.road import BrakingEnv
from testbed.envs.shapes import SpuriousShapes
from testbed.envs.text import SpuriousText
from testbed.envs.waterbirds import Waterbirds
from testbed.envs.wilds_env import WildsEnv

__all__ = ["Batch", "Braking", "BrakingEnv", "CelebA", "CivilComments", "ColoredMNIST", "EnvSpec", "GaussianGroups",
           "ShiftedEnv", "Split", "SpuriousShapes", "SpuriousText", "TensorLoader", "Waterbirds", "WildsEnv"]

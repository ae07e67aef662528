"""Training regimes and reference methods (installed as `testbed.baselines`)."""

from testbed.baselines.balance import CBLoss, ReSample, ReWeight, SqrtReWeight
from testbed.baselines.continual_finetune import ContinualFinetune
from testbed.baselines.crt import CRT, ReWeightCRT
from testbed.baselines.cvar_dro import CVaRDRO
from testbed.baselines.dagger import DAgger
from testbed.baselines.dfr import DFR
from testbed.baselines.distribution_matching import CORAL, MMD
from testbed.baselines.erm import ERM
from testbed.baselines.group_dro import GroupDRO
from testbed.baselines.imbalance import LDAM, BSoftmax, Focal
from testbed.baselines.irm import IRM
from testbed.baselines.jtt import JTT
from testbed.baselines.lff import LfF
from testbed.baselines.lisa import LISA
from testbed.baselines.mixup import Mixup
from testbed.baselines.online import Online
from testbed.baselines.oracle import Oracle
from testbed.baselines.vrex import VREx

__all__ = ["CORAL", "CRT", "LDAM", "LISA", "MMD", "BSoftmax", "CBLoss", "CVaRDRO", "ContinualFinetune", "DAgger",
           "DFR", "ERM", "Focal", "GroupDRO", "IRM", "JTT", "LfF", "Mixup", "Online", "Oracle", "ReSample",
           "ReWeight", "ReWeightCRT", "SqrtReWeight", "VREx"]

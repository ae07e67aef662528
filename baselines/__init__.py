"""Training regimes and reference methods (installed as `testbed.baselines`)."""

from testbed.baselines.balance import ReSample, ReWeight
from testbed.baselines.continual_finetune import ContinualFinetune
from testbed.baselines.dagger import DAgger
from testbed.baselines.dfr import DFR
from testbed.baselines.distribution_matching import CORAL, MMD
from testbed.baselines.erm import ERM
from testbed.baselines.group_dro import GroupDRO
from testbed.baselines.irm import IRM
from testbed.baselines.jtt import JTT
from testbed.baselines.lff import LfF
from testbed.baselines.mixup import Mixup
from testbed.baselines.online import Online
from testbed.baselines.oracle import Oracle
from testbed.baselines.vrex import VREx

__all__ = ["CORAL", "ContinualFinetune", "DAgger", "DFR", "ERM", "GroupDRO", "IRM", "JTT", "LfF", "MMD", "Mixup",
           "Online", "Oracle", "ReSample", "ReWeight", "VREx"]

"""Training regimes and reference methods (installed as `testbed.baselines`)."""

from testbed.baselines.continual_finetune import ContinualFinetune
from testbed.baselines.dagger import DAgger
from testbed.baselines.dfr import DFR
from testbed.baselines.erm import ERM
from testbed.baselines.group_dro import GroupDRO
from testbed.baselines.irm import IRM
from testbed.baselines.online import Online
from testbed.baselines.oracle import Oracle
from testbed.baselines.vrex import VREx

__all__ = ["ContinualFinetune", "DAgger", "DFR", "ERM", "GroupDRO", "IRM", "Online", "Oracle", "VREx"]

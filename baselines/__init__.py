"""Training regimes and reference methods (installed as `testbed.baselines`)."""

from testbed.baselines.erm import ERM
from testbed.baselines.oracle import Oracle

__all__ = ["ERM", "Oracle"]

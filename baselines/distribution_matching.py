"""CORAL and MMD: match the distribution of penultimate features across training environments (as DomainBed
implements them)."""

import itertools

import torch
from torch import Tensor

from testbed.baselines.risks import group_risks
from testbed.envs.base import Batch
from testbed.errors import ConfigError, check_positive
from testbed.module import Baseline

# Bandwidths of the sum of Gaussian kernels in DomainBed's MMD.
GAMMAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


class DistributionMatching(Baseline):
    """Mean risk over the training environments plus `gamma` times the mean `discrepancy` between the penultimate
    features (`net[:-1]`) of every pair of environments in the batch. A feature whose distribution differs between
    environments, such as a colour whose agreement with the label varies, is penalised.

    Args:
        gamma: weight of the discrepancy (DomainBed's default 1).
    """

    def __init__(self, gamma: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if type(self) is DistributionMatching:
            raise ConfigError("model: DistributionMatching is a shared base class; give --model=CORAL or --model=MMD")
        check_positive("gamma", gamma)

    def discrepancy(self, f: Tensor, g: Tensor) -> Tensor:
        raise NotImplementedError

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        features = self.net[:-1](batch.x)
        envs, risks = group_risks(self.cross_entropy(self.net[-1](features), batch.y), batch.e)
        parts = [f for f in (features[batch.e == e] for e in envs) if len(f) > 1]
        gaps = [self.discrepancy(f, g) for f, g in itertools.combinations(parts, 2)]
        penalty = torch.stack(gaps).mean() if gaps else risks.new_zeros(())
        self.log("train/penalty", penalty, on_step=False, on_epoch=True)
        return risks.mean() + self.hparams.gamma * penalty


class CORAL(DistributionMatching):
    """Deep CORAL (Sun and Saenko 2016): the discrepancy is the mean squared difference of the feature means plus
    that of the feature covariances."""

    def discrepancy(self, f: Tensor, g: Tensor) -> Tensor:
        return (f.mean(0) - g.mean(0)).pow(2).mean() + (f.T.cov() - g.T.cov()).pow(2).mean()


class MMD(DistributionMatching):
    """MMD-AAE's penalty (Li et al. 2018): the maximum mean discrepancy with a sum of Gaussian kernels of
    bandwidths 1e-3 to 1e3, as in DomainBed."""

    @staticmethod
    def kernel(f: Tensor, g: Tensor) -> Tensor:
        d = (f.pow(2).sum(1, keepdim=True) + g.pow(2).sum(1) - 2 * f @ g.T).clamp_min(0)  # no sqrt: finite gradients
        return sum(torch.exp(-gamma * d) for gamma in GAMMAS)

    def discrepancy(self, f: Tensor, g: Tensor) -> Tensor:
        return self.kernel(f, f).mean() + self.kernel(g, g).mean() - 2 * self.kernel(f, g).mean()

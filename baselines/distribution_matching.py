"""CORAL and MMD: match the distribution of penultimate features across training environments (as DomainBed
implements them).

They can act only on what differs between the training environments' input distributions. In SpuriousShapes
(and ColoredMNIST) the label is balanced and the colour agrees with it with probability `corr`, so P(colour) =
1/2 and P(shape) = 1/2 in every training environment: features that read the colour alone, or the shape alone,
have the same distribution everywhere and cost these penalties nothing. What differs is the joint of colour
and shape (with two classes and label noise 0.25, P(colour = shape) = 0.75 corr + 0.25 (1 - corr): 0.70 and
0.65 in the confounded preset), so they act only on features that combine the two, and cannot by themselves
move a model off a colour-only rule. Where the environments' marginals differ (a colour or label prior that
changes between them, as in WILDS' or DomainBed's domains), matching them can remove a feature.
"""

import itertools
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from testbed.baselines.risks import group_risks
from testbed.envs.base import Batch
from testbed.errors import check_positive
from testbed.hparams import Range
from testbed.training.module import Baseline

# Bandwidths of the sum of Gaussian kernels in DomainBed's MMD.
GAMMAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def coral(f: Tensor, g: Tensor) -> Tensor:
    """Deep CORAL's discrepancy (Sun and Saenko 2016): the mean squared difference of the feature means plus that of
    the feature covariances."""
    return (f.mean(0) - g.mean(0)).pow(2).mean() + (f.T.cov() - g.T.cov()).pow(2).mean()


def gaussian_kernel(f: Tensor, g: Tensor) -> Tensor:
    d = (f.pow(2).sum(1, keepdim=True) + g.pow(2).sum(1) - 2 * f @ g.T).clamp_min(0)  # no sqrt: finite gradients
    return sum(torch.exp(-gamma * d) for gamma in GAMMAS)


def mmd(f: Tensor, g: Tensor) -> Tensor:
    """The maximum mean discrepancy under a sum of Gaussian kernels of bandwidths 1e-3 to 1e3 (Li et al. 2018)."""
    return gaussian_kernel(f, f).mean() + gaussian_kernel(g, g).mean() - 2 * gaussian_kernel(f, g).mean()


def matching_loss(model: Baseline, batch: Batch, discrepancy: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Mean risk over the training environments plus `gamma` times the mean discrepancy between the penultimate
    features (`net[:-1]`) of every pair of environments in the batch (environments with one sample are left out)."""
    features = model.net[:-1](batch.x)
    envs, risks = group_risks(model.cross_entropy(model.net[-1](features), batch.y), batch.e)
    parts = [f for f in (features[batch.e == e] for e in envs) if len(f) > 1]
    gaps = [discrepancy(f, g) for f, g in itertools.combinations(parts, 2)]
    penalty = torch.stack(gaps).mean() if gaps else risks.new_zeros(())
    model.log("train/penalty", penalty, on_step=False, on_epoch=True)
    return risks.mean() + model.hparams.gamma * penalty


class FeatureMatching:
    """Risk plus `gamma` times a discrepancy between the training environments' features (`matching_loss`), written
    once for CORAL and MMD, which differ only in `discrepancy`. Mixed into a `Baseline` before it
    (`class CORAL(FeatureMatching, Baseline)`), so that it is no baseline of its own to choose.

    Args:
        gamma: weight of the discrepancy (DomainBed's default 1).
    """

    discrepancy: ClassVar[Callable[[Tensor, Tensor], Tensor]]
    # DomainBed's and SubpopBench's range for both (hparams_registry.py, mmd_gamma: 10^U(-1, 1)).
    tunable = {**Baseline.tunable, "gamma": Range(0.1, 10.0, log=True)}

    def __init__(self, gamma: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        check_positive("gamma", gamma)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return matching_loss(self, batch, type(self).discrepancy)


class CORAL(FeatureMatching, Baseline):
    """Deep CORAL across training environments: features whose mean or covariance differs between environments
    are penalised (see the module's docstring for what that excludes: a colour whose agreement with the label
    varies but whose frequency does not is not such a feature)."""

    discrepancy = staticmethod(coral)


class MMD(FeatureMatching, Baseline):
    """MMD-AAE's penalty (Li et al. 2018) across training environments, with DomainBed's Gaussian kernels (it sees
    what CORAL sees, and differences in higher moments; see the module's docstring)."""

    discrepancy = staticmethod(mmd)

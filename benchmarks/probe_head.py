"""The probe's and DFR's head fit (`testbed.training.probe.fit_head`: L1 logistic regression, C chosen on a
held-out half, 20 balanced draws) against the head it replaced, a single fixed-L2 logistic regression over 10
balanced draws by L-BFGS, kept here only as the timing reference. Both fit the same synthetic features: a core
block that carries the label, a spurious block that carries an attribute agreeing with it 90% of the time, and
noise, after a ReLU as penultimate features are."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import bench_args, interleaved, report, timed
from torch import Tensor

from testbed.training.probe import balanced_rows, fit_head

SHAPES = ((1000, 64), (2000, 2048))  # samples x features: a small MLP's, and a ResNet-50-sized representation


def features(n: int, dim: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Penultimate-like features, labels and groups (label x attribute)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    a = torch.where(torch.rand(n, generator=gen) < 0.9, y, 1 - y)
    j = torch.arange(dim)
    f = (torch.randn(n, dim, generator=gen) + 0.5 * (2 * y[:, None] - 1) * (j < dim // 8)
         + (2 * a[:, None] - 1) * ((j >= dim // 8) & (j < dim // 4)))
    return f.relu(), y, 2 * y + a


def l2_head(f: Tensor, y: Tensor, g: Tensor, n_classes: int, draws: int = 10, l2: float = 1e-3) -> Tensor:
    """The reference: the average of `draws` L2 logistic regressions (mean loss + l2 / 2 |W|^2) on balanced draws of
    standardised features, one L-BFGS over all draws."""
    f = f.double()
    mean, std = f.mean(0), f.std(0).clamp_min(1e-6)
    rows = torch.stack([balanced_rows(g, torch.Generator().manual_seed(0)) for _ in range(draws)])
    z, yy = (f[rows] - mean) / std, y[rows]
    w = z.new_zeros(draws, n_classes, z.shape[2], requires_grad=True)
    b = z.new_zeros(draws, 1, n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=500, history_size=10, tolerance_grad=1e-4,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(torch.baddbmm(b, z, w.transpose(1, 2)).flatten(0, 1), yy.flatten()) * draws
        loss = loss + l2 / 2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def variants(f: Tensor, y: Tensor, g: Tensor) -> dict[str, Callable[[], float]]:
    """The two fits of one feature set, each timed."""
    return {"fixed-L2 head, 10 draws (reference)": lambda: timed(lambda: l2_head(f, y, g, 2)),
            "fit_head (L1, C grid, 20 draws)": lambda: timed(lambda: fit_head(f, y, g, 2))}


def main() -> None:
    args = bench_args(__doc__, repeats=3)
    print(f"head fit, {torch.get_num_threads()} threads, {args.repeats} interleaved rounds")
    for n, dim in SHAPES:
        f, y, g = features(n, dim)
        fit = fit_head(f, y, g, 2)
        print(f"{n} samples x {dim} features: C chosen {fit.c}, head nonzeros {int((fit.head.weight != 0).sum())}")
        report(interleaved(variants(f, y, g), args.repeats), unit=1.0, label="s")


if __name__ == "__main__":
    main()

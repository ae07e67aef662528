"""The probe: does the representation carry the causal feature, whatever the trained head reads?

After training, the backbone is frozen and its penultimate features (`net[:-1](x)`, testbed's backbone
contract) are computed once. A fresh linear head is fit on a group-balanced held-out set drawn from the
validation samples of the `id` sub-environments, and scored on every sub-environment's test data (and its
interventions) beside the model's own head, on the same features (`Baseline`'s test stage), under stage `probe`:
`probe/acc_avg`, `probe/acc_wg`, `probe/spurious_reliance`, `probe/{env}/acc`, ...

The head follows DFR (Kirichenko et al. 2022, "Last layer re-training is sufficient for robustness to
spurious correlations"): logistic regression on standardised features, each group subsampled to the size of
the smallest, and the weights of several such draws averaged. Where DFR tunes an L1 penalty on half of the
validation data, the probe uses a small fixed L2 penalty and all of it, so that it needs no selection.
"""

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from testbed.envs.base import Batch, ShiftedEnv, TensorLoader, concat
from testbed.errors import ConfigError

L2 = 1e-3  # penalty on the squared weights per sample (mean loss), on standardised features
DRAWS = 10  # group-balanced subsamples whose heads are averaged (DFR averages 20 to 30; 10 keep it cheap)


def body_and_head(net: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """The feature extractor and the linear head of a backbone built by `testbed.training.backbones`."""
    if not (isinstance(net, nn.Sequential) and isinstance(net[-1], nn.Linear)):
        raise ConfigError(f"model: the probe needs a backbone whose last module is its linear head; "
                          f"{type(net).__name__} is not one (turn the probe off with --model.probe false)")
    return net[:-1], net[-1]


def on_device(env: ShiftedEnv, data: Batch, device: torch.device) -> Iterator[Batch]:
    """`data` in evaluation batches, moved and transformed as Lightning gives them to the model."""
    for b in TensorLoader(data, env.eval_batch_size):
        yield env.on_after_batch_transfer(Batch(*(t.to(device) for t in b)), 0)


@torch.no_grad()
def features(body: nn.Module, env: ShiftedEnv, data: Batch, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Penultimate features, labels and groups of `data`, on the CPU."""
    parts = [(body(b.x).flatten(1).cpu(), b.y.cpu(), env.group(b).cpu()) for b in on_device(env, data, device)]
    return tuple(torch.cat(p) for p in zip(*parts))


def balanced_rows(g: Tensor, gen: torch.Generator) -> Tensor:
    """A subsample in which every group present keeps as many samples as the smallest one has."""
    groups = g.unique()
    smallest = min(int((g == k).sum()) for k in groups)
    rows = [torch.nonzero(g == k).flatten() for k in groups]
    return torch.cat([r[torch.randperm(len(r), generator=gen)[:smallest]] for r in rows])


def logistic_regression(z: Tensor, y: Tensor, n_classes: int, l2: float) -> tuple[Tensor, Tensor]:
    """Independent fits on `draws` data sets at once, `z` `[draws, n, dim]` and `y` `[draws, n]`: weights
    `[draws, classes, dim]` and biases `[draws, 1, classes]`, each minimising its mean cross-entropy plus
    `l2 / 2 * |W|^2`. One L-BFGS on the sum of the draws' (separate, convex) losses: a tenth of the Python
    overhead of ten fits."""
    w = z.new_zeros(len(z), n_classes, z.shape[2], requires_grad=True)
    b = z.new_zeros(len(z), 1, n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=500, history_size=10, tolerance_grad=1e-4,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        logits = torch.baddbmm(b, z, w.transpose(1, 2))
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten()) * len(z) + l2 / 2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def fit_head(f: Tensor, y: Tensor, g: Tensor, n_classes: int, draws: int = DRAWS, l2: float = L2,
             seed: int = 0) -> nn.Linear:
    """A linear head on features `f`: the average of logistic regressions fit on `draws` group-balanced
    subsamples of standardised features, folded back into one `nn.Linear` on the raw features. Fit with autograd
    even when called inside Lightning's test loop (inference mode)."""
    with torch.inference_mode(False), torch.enable_grad():
        return _fit_head(f.to(torch.float64, copy=True), y.clone(), g.clone(), n_classes, draws, l2, seed)


def _fit_head(f: Tensor, y: Tensor, g: Tensor, n_classes: int, draws: int, l2: float, seed: int) -> nn.Linear:
    mean, std = f.mean(0), f.std(0).clamp_min(1e-6)
    gen = torch.Generator().manual_seed(seed)
    rows = torch.stack([balanced_rows(g, gen) for _ in range(draws)])  # every draw has the same size
    w, b = logistic_regression((f[rows] - mean) / std, y[rows], n_classes, l2)
    w, b = w.mean(0) / std, b.mean((0, 1))
    head = nn.utils.skip_init(nn.Linear, f.shape[1], n_classes, dtype=torch.float32)  # no draw from the global RNG
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(b - w @ mean)
    return head


def heldout_head(net: nn.Module, env: ShiftedEnv) -> nn.Linear:
    """A fresh head for `net`'s frozen features, fit on the validation samples of the `id` environments,
    on `net`'s device."""
    body, _ = body_and_head(net)
    ids = env.names("id")
    if not ids:
        raise ConfigError(f"data: {type(env).__name__} has no 'id' environment whose validation samples could fit "
                          "a new head")
    device = next(net.parameters()).device
    f, y, g = features(body, env, concat([env.val_data[n] for n in ids]), device)
    return fit_head(f, y, g, env.n_classes).to(device)

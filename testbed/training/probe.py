"""The probe: does the representation carry the causal feature, whatever the trained head reads?

After training, the backbone is frozen and its penultimate features (`net[:-1](x)`, testbed's backbone
contract) are computed once. A fresh linear head is fit on group-balanced draws of the validation samples of the
`id` sub-environments, and scored on every sub-environment's test data (and its interventions) beside the model's
own head, on the same features (`Baseline`'s test stage), under stage `probe`: `probe/acc_avg`, `probe/acc_wg`,
`probe/spurious_reliance`, `probe/{env}/acc`, ...

The head is DFR's, fit as Kirichenko et al. 2022 ("Last layer re-training is sufficient for robustness to
spurious correlations"; their `dfr_evaluate_spurious.py`) fit it, and `DFR` makes it the model's head:
1. the held-out samples are split into two random halves;
2. for each inverse L1 strength C in `C_GRID`, an L1-penalised logistic regression on standardised features is fit
   on a group-balanced subsample of the first half (every group cut to the smallest one's size), and scored by
   its worst-group accuracy on the second half; the best C is kept (the larger on a tie, as their argmax does);
3. `DRAWS` regressions with that C, each on a group-balanced subsample of all the held-out samples, are averaged
   (their weights and biases) into the head.
The penalty is liblinear's, ||w||_1 + C sum_i loss_i (sklearn's `LogisticRegression(penalty="l1")`, which they
use), solved here by batched proximal gradient (FISTA) for every C or draw at once, with a softmax over the classes
(for two classes, the same solution as their sigmoid one) and an unpenalised bias. Where they standardise with the
training set's feature statistics, this uses the held-out samples' own, so that no pass over the training data is
needed.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from testbed.envs.base import Batch, ShiftedEnv, TensorLoader, concat
from testbed.errors import ConfigError

# Kirichenko et al.'s C_OPTIONS (Waterbirds, the setting they give for every dataset with the L1 penalty) and their
# 20 retrains of the final head (`dfr_on_validation_eval`'s num_retrains).
C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
DRAWS = 20


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


def l1_logistic(z: Tensor, y: Tensor, n_classes: int, lam: Tensor, max_iter: int = 5000,
                tol: float = 1e-4) -> tuple[Tensor, Tensor]:
    """Independent L1-penalised logistic regressions, K penalties on each of D data sets (`z` `[D, n, dim]`, `y`
    `[D, n]`, `lam` `[D, K]`), each minimising its mean cross-entropy plus `lam[d, k] * |W|_1`: weights
    `[D, K, classes, dim]` and biases `[D, K, classes]`.

    FISTA (Beck and Teboulle 2009) with adaptive restart (O'Donoghue and Candes 2015), run for all D * K problems in
    one step: the K problems of a data set share its matrix products (one `[n, dim] x [dim, K * classes]` product
    per data set) and its Lipschitz constant L = |[z, 1]|_2^2 / (2 n) (a softmax's Hessian is at most 1/2 in the
    logits); the step is 1 / L. Each problem keeps its own momentum and stops on its own once its proximal-gradient
    residual's L1 norm is at most `tol` times its gradient's at zero (liblinear's kind of relative criterion, with
    sklearn's default 1e-4), and a data set whose problems have all stopped leaves the batch. Where features
    outnumber samples, FISTA runs on a working set of at most n features per data set (the largest gradients at
    zero above half the smallest penalty; an L1 solution has at most about n nonzeros), padded to one width with a
    zero column; then the n features outside it that break the optimality condition |grad| <= lam the most are
    added, until the violations sum to at most `tol / 2` of the scale (the inner fit stops at the other half): the
    full problem's solution, at the cost of the features it uses (in `benchmarks/probe_head.py`, 2048 -> 356)."""
    n_sets, n, dim = z.shape
    k, c = lam.shape[1], n_classes
    onehot = F.one_hot(y, c).to(z.dtype)[:, :, None, :]  # [D, n, 1, classes]
    padded = torch.cat([z, z.new_zeros(n_sets, n, 1)], 2)  # column `dim` is the padding
    w, b = z.new_zeros(n_sets, k, c, dim + 1), z.new_zeros(n_sets, k, c)
    grad = (1 / c - onehot[:, :, 0]).transpose(1, 2) @ z / n  # [D, classes, dim]: the gradient at zero
    scale = (grad.abs().sum((1, 2)) + (1 / c - onehot[:, :, 0]).sum(1).abs().sum(1) / n)[:, None].expand(-1, k)
    cols = top(grad.abs().amax(1) - lam.amin(1, keepdim=True) / 2, n) | (dim <= n)  # [D, dim]; all if few
    while True:
        width = max(int(cols.sum(1).max()), 1)
        idx = torch.where(cols, torch.arange(dim), dim).sort(1).values[:, :width]  # each set's columns, then padding
        zs = padded.gather(2, idx[:, None].expand(-1, n, -1))
        ws, b = _fista(zs, onehot, lam, w.gather(3, idx[:, None, None].expand(-1, k, c, -1)), b, scale, tol / 2,
                       max_iter)
        w = w.zero_().scatter_(3, idx[:, None, None].expand(-1, k, c, -1), ws)
        w[..., dim] = 0
        logits = torch.baddbmm(b.flatten(1)[:, None], z, w[..., :dim].flatten(1, 2).transpose(1, 2))
        g = (torch.softmax(logits.view(n_sets, n, k, c), -1) - onehot) / n
        grad = (g.flatten(2).transpose(1, 2) @ z).view(n_sets, k, c, dim)
        excess = (grad.abs() - lam[..., None, None]).clamp(min=0) * ~cols[:, None, None]  # outside the set only
        if bool((excess.sum((2, 3)) <= tol / 2 * scale).all()):
            return w[..., :dim].contiguous(), b
        cols = cols | top(excess.amax((1, 2)), n)


def top(score: Tensor, m: int) -> Tensor:
    """Per row of `score` `[D, dim]`, the mask of its at most `m` largest positive entries."""
    mask = torch.zeros_like(score, dtype=torch.bool)
    values, idx = score.topk(min(m, score.shape[1]), 1)
    return mask.scatter_(1, idx, values > 0)


def _fista(z: Tensor, onehot: Tensor, lam: Tensor, w: Tensor, b: Tensor, scale: Tensor, tol: float,
           max_iter: int) -> tuple[Tensor, Tensor]:
    """`l1_logistic`'s FISTA from `w`, `b` on data sets `z` (`onehot` labels `[D, n, 1, classes]`), each problem
    stopping once its proximal-gradient residual's L1 norm is at most `tol * scale`."""
    n_sets, n, dim = z.shape
    k, c = w.shape[1], w.shape[2]
    step = (2 * n / torch.linalg.matrix_norm(torch.cat([z, z.new_ones(n_sets, n, 1)], 2), ord=2).square())[:, None]
    shrink = (lam * step)[..., None, None]  # [D, K, 1, 1]
    out_w, out_b = w.clone(), b.clone()
    vw, vb = w, b
    t, live = z.new_ones(n_sets, k), torch.ones(n_sets, k, dtype=torch.bool)
    sets = torch.arange(n_sets)  # the data sets still in the batch, indexing z, y, lam and the outputs
    for _ in range(max_iter):
        logits = torch.baddbmm(vb.flatten(1)[:, None], z, vw.flatten(1, 2).transpose(1, 2)).view(len(sets), n, k, c)
        g = (torch.softmax(logits, -1) - onehot) / n  # [D, n, K, classes]
        gw, gb = (g.flatten(2).transpose(1, 2) @ z).view_as(vw), g.sum(1)
        uw = vw - step[..., None, None] * gw
        new_w = uw.sign() * (uw.abs() - shrink).clamp(min=0)  # the L1 proximal step: soft thresholding
        new_b = vb - step[..., None] * gb
        residual = ((new_w - vw).abs().sum((2, 3)) + (new_b - vb).abs().sum(2)) / step
        done = residual <= tol * scale
        # A stopped problem stays where it stopped; the others take the step, with momentum restarted where it
        # points uphill.
        new_w, new_b = torch.where(live[..., None, None], new_w, w), torch.where(live[..., None], new_b, b)
        dw, db = new_w - w, new_b - b
        uphill = ((vw - new_w) * dw).sum((2, 3)) + ((vb - new_b) * db).sum(2) > 0
        t = torch.where(uphill, 1.0, t)
        t_next = (1 + (1 + 4 * t * t).sqrt()) / 2
        mom = (t - 1) / t_next
        vw, vb = new_w + mom[..., None, None] * dw, new_b + mom[..., None] * db
        w, b, t, live = new_w, new_b, t_next, live & ~done
        keep = live.any(1)
        if not bool(keep.all()):
            out_w[sets[~keep]], out_b[sets[~keep]] = w[~keep], b[~keep]
            sets = sets[keep]
            if not len(sets):
                return out_w, out_b
            z, onehot, step, shrink, scale = z[keep], onehot[keep], step[keep], shrink[keep], scale[keep]
            w, b, vw, vb, t, live = w[keep], b[keep], vw[keep], vb[keep], t[keep], live[keep]
    out_w[sets], out_b[sets] = w, b
    return out_w, out_b


def worst_group_accuracy(logits: Tensor, y: Tensor, g: Tensor) -> Tensor:
    """The accuracy of the worst group present, for each of P heads' `logits` `[P, n, classes]`: `[P]`."""
    correct = (logits.argmax(-1) == y).to(logits.dtype)
    return torch.stack([correct[:, g == k].mean(1) for k in g.unique()], 1).min(1).values


@dataclass
class Retrained:
    """A head fit by `fit_head`: the head, the C chosen, and, for out-of-sample validation, the head fit with that C
    on the first half alone, the rows of the second half it was chosen on (of the held-out samples given), and
    (`heldout_head`) those rows per `id` environment."""

    head: nn.Linear
    c: float
    half_head: nn.Linear
    second_half: Tensor
    held_out: dict[str, Tensor] = field(default_factory=dict)


def fit_head(f: Tensor, y: Tensor, g: Tensor, n_classes: int, draws: int = DRAWS, seed: int = 0,
             c_grid: tuple[float, ...] = C_GRID) -> Retrained:
    """DFR's head on features `f` (the module docstring), folded back into an `nn.Linear` on the raw features. Fit
    with autograd off, even inside Lightning's test loop (inference mode)."""
    with torch.inference_mode(False), torch.no_grad():
        return _fit_head(f.to(torch.float64, copy=True), y.clone(), g.clone(), n_classes, draws, seed, c_grid)


def linear(w: Tensor, b: Tensor, mean: Tensor, std: Tensor) -> nn.Linear:
    """The average of heads `w` `[P, classes, dim]`, `b` `[P, 1, classes]` on standardised features, as one
    `nn.Linear` on the raw ones."""
    w, b = w.mean(0) / std, b.mean((0, 1))
    head = nn.utils.skip_init(nn.Linear, w.shape[1], w.shape[0], dtype=torch.float32)  # no draw from the global RNG
    head.weight.copy_(w)
    head.bias.copy_(b - w @ mean)
    return head


def _fit_head(f: Tensor, y: Tensor, g: Tensor, n_classes: int, draws: int, seed: int,
              c_grid: tuple[float, ...]) -> Retrained:
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=gen)
    first, second = order[: len(y) // 2], order[len(y) // 2:]
    # Each problem's mean loss + 1 / (C n) |W|_1 is liblinear's ||w||_1 + C sum_i loss_i divided by C n.
    mean, std = f[first].mean(0), f[first].std(0).clamp_min(1e-6)
    rows = first[balanced_rows(g[first], gen)]
    f32 = f.to(torch.float32)  # the fits' products in float32; statistics and the folded head in float64
    z = ((f32[rows] - mean.float()) / std.float())[None]  # one data set for the whole grid
    w, b = l1_logistic(z, y[rows][None], n_classes, 1 / (torch.tensor([c_grid]) * len(rows)))
    w, b = w[0].to(f.dtype), b[0, :, None].to(f.dtype)
    scores = worst_group_accuracy(torch.baddbmm(b, ((f[second] - mean) / std).expand(len(c_grid), -1, -1),
                                                w.transpose(1, 2)), y[second], g[second])
    best = int(torch.nonzero(scores == scores.max())[0])  # the first best: the largest C of a tie
    half_head = linear(w[best:best + 1], b[best:best + 1], mean, std)
    mean, std = f.mean(0), f.std(0).clamp_min(1e-6)
    rows = torch.stack([balanced_rows(g, gen) for _ in range(draws)])  # every draw has the same size
    w, b = l1_logistic((f32[rows] - mean.float()) / std.float(), y[rows], n_classes,
                       torch.full((draws, 1), 1 / (c_grid[best] * rows.shape[1])))
    w, b = w[:, 0].to(f.dtype), b[:, :1].to(f.dtype)
    return Retrained(linear(w, b, mean, std), c_grid[best], half_head, second.sort().values)


def heldout_head(net: nn.Module, env: ShiftedEnv, retraining: bool = False) -> Retrained:
    """A fresh head for `net`'s frozen features (`fit_head`), on `net`'s device, fit on the validation samples of
    the `id` environments, or with `retraining` on their `retraining_data` (DFR's: all of a WILDS validation split);
    `held_out` gives, per `id` environment, the rows of those samples in the second half."""
    body, _ = body_and_head(net)
    ids = env.names("id")
    if not ids:
        raise ConfigError(f"data: {type(env).__name__} has no 'id' environment whose validation samples could fit "
                          "a new head")
    device = next(net.parameters()).device
    parts = [env.retraining_data(n) if retraining else env.val_data[n] for n in ids]
    f, y, g = features(body, env, concat(parts), device)
    fit = fit_head(f, y, g, env.n_classes, seed=env.seed)
    fit.head, fit.half_head = fit.head.to(device), fit.half_head.to(device)
    ends = torch.tensor([len(p.y) for p in parts]).cumsum(0).tolist()
    second = fit.second_half
    fit.held_out = {n: second[(second >= lo) & (second < hi)] - lo for n, lo, hi in zip(ids, [0, *ends[:-1]], ends)}
    return fit

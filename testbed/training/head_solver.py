"""The linear head fit to convergence by L-BFGS: a weighted, near-unregularised logistic regression on fixed features.

What Sagawa et al. 2020b fit on random features (sklearn's `LogisticRegression(solver="lbfgs")`, L2 weight
lambda = 1e-9, run until its gradient test passes), instead of a fixed number of Adam steps, whose implicit bias
past the interpolation threshold is not that solution's. It minimises, in float64,

    sum_i w_i CE(W f_i + b, y_i) / sum_i w_i + (weight_decay / 2) ||W||^2

with the per-sample weights w_i of the method (1 for ERM, the group's weight for ReWeight; ReSample's subsample is
its data). The bias is not penalised (sklearn's is not). For two classes, a softmax head W = [w_0; w_1] with
weight_decay = 2 lambda has the optimum of a sigmoid one with v = w_1 - w_0 and penalty (lambda / 2) ||v||^2
(at the optimum w_1 = -w_0 = v / 2). The probe's solver (`testbed.training.probe.l1_logistic`) is a first-order
L1 one (FISTA), which would crawl towards an unregularised optimum: this is a second-order one.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# sklearn's defaults, which Sagawa et al. kept: stop once the gradient's largest entry is at most GTOL (scipy's
# `gtol`) or the objective stops changing (its `ftol`, 64 machine epsilons), after at most MAX_ITER iterations
# (theirs is 1e8: in effect, to convergence) with a history of 10 (scipy's `maxcor`).
GTOL = 1e-4
FTOL = 64 * torch.finfo(torch.float64).eps
MAX_ITER = 20_000
HISTORY = 10


@dataclass
class HeadFit:
    """How the fit ended: iterations run, the objective's final value and its gradient's largest entry, whether
    that met `GTOL`, and the fitted head's loss and accuracy on the (weighted) data it was fit on."""

    iterations: int
    objective: float
    grad_max: float
    converged: bool
    train_loss: float
    train_acc: float

    def record(self, weight_decay: float) -> dict[str, object]:
        """The run's convergence record (the keys `testbed.training.budget.convergence` writes, and the fit's)."""
        criterion = (f"L-BFGS on the head's logistic loss + ({weight_decay:g} / 2) ||W||^2 until its gradient's "
                     f"largest entry is at most {GTOL:g} (at most {MAX_ITER} iterations)")
        return {"criterion": criterion, "converged": self.converged, "train_loss": self.train_loss,
                "train_acc": self.train_acc, "iterations": self.iterations, "objective": self.objective,
                "grad_max": self.grad_max}


def fit_head_lbfgs(head: nn.Linear, f: Tensor, y: Tensor, weights: Tensor, weight_decay: float) -> HeadFit:
    """Fit `head` in place on features `f` `[n, dim]`, labels `y` and per-sample loss weights `weights` `[n]`,
    from zero (sklearn's start, so that where the loss has many minimisers the one found is near the smallest), by
    L-BFGS with a strong Wolfe line search (the module docstring's objective)."""
    f, w_s = f.double(), (weights / weights.sum()).double()
    w = f.new_zeros(head.weight.shape, requires_grad=True)
    b = f.new_zeros(head.bias.shape, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=MAX_ITER, max_eval=MAX_ITER * 5 // 4, tolerance_grad=GTOL,
                            tolerance_change=FTOL, history_size=HISTORY, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        opt.zero_grad()
        loss = (w_s * F.cross_entropy(torch.addmm(b, f, w.T), y, reduction="none")).sum()
        loss = loss + weight_decay / 2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(objective)
    value = objective().detach()
    grad_max = float(torch.cat([w.grad.flatten(), b.grad]).abs().max())
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(b)
        logits = head(f.to(head.weight.dtype))  # the head as the model will use it, in its own precision
        ce = F.cross_entropy(logits, y, reduction="none")
        right = (logits.argmax(1) == y).to(ce.dtype)
        weights = weights.to(ce.dtype)
        train_loss, train_acc = float((weights * ce).sum() / weights.sum()), float(right.mean())
    return HeadFit(opt.state[w]["n_iter"], float(value), grad_max, grad_max <= GTOL, train_loss,
                   train_acc)

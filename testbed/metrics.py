"""Metrics from per-group tallies, with stable keys.

Per environment: `{stage}/{env}/acc`, `acc_wg`, `spurious_reliance`, `causal_sensitivity`.
Aggregates over the shifted (`ood`) environments, pooled: `{stage}/acc_avg`, `acc_wg`, `acc_worst_env`,
`spurious_reliance`, `causal_sensitivity`; over the held-out in-distribution ones: `acc_id`; over the
training data: `acc_train`; and `ood_gap = acc_id - acc_avg`.

`spurious_reliance` is the fraction of predictions that change when only the spurious attribute is
intervened on (set to another value); `causal_sensitivity` the same for the causal feature.
"""

import torch
from torch import Tensor


def tally(pred: Tensor, y: Tensor, g: Tensor, n_groups: int,
          pred_a: Tensor | None = None, pred_c: Tensor | None = None) -> Tensor:
    """One tensor `[correct per group, count per group, flips under do(a), flips under do(causal)]` from the
    predictions, labels and group ids of a batch, so that distributed ranks can sum their tallies in a single
    all-reduce."""
    correct = torch.bincount(g, weights=(pred == y).double(), minlength=n_groups)
    total = torch.bincount(g, minlength=n_groups).double()
    flips = [(p != pred).sum().double() if p is not None else pred.new_zeros((), dtype=torch.double)
             for p in (pred_a, pred_c)]
    return torch.cat([correct, total, torch.stack(flips)])


def env_metrics(t: Tensor, interventions: tuple[str, ...]) -> dict[str, float]:
    n_groups = (len(t) - 2) // 2
    correct, total = t[:n_groups], t[n_groups:2 * n_groups]
    n = total.sum().item()
    seen = total > 0
    out = {"acc": correct.sum().item() / n, "acc_wg": (correct[seen] / total[seen]).min().item()}
    if "a" in interventions:
        out["spurious_reliance"] = t[-2].item() / n
    if "causal" in interventions:
        out["causal_sensitivity"] = t[-1].item() / n
    return out


def summarize(stage: str, tallies: dict[str, Tensor], roles: dict[str, str],
              interventions: tuple[str, ...]) -> dict[str, float]:
    """Per-environment and aggregate metrics under `{stage}/...` keys."""
    out: dict[str, float] = {}
    for name, t in tallies.items():
        out.update({f"{stage}/{name}/{k}": v for k, v in env_metrics(t, interventions).items()})

    def pooled(role: str) -> dict[str, float] | None:
        ts = [t for name, t in tallies.items() if roles[name] == role]
        return env_metrics(torch.stack(ts).sum(0), interventions) if ts else None

    ood, id_, train = pooled("ood"), pooled("id"), pooled("train")
    if ood is not None:
        out[f"{stage}/acc_avg"] = ood.pop("acc")
        out[f"{stage}/acc_worst_env"] = min(out[f"{stage}/{n}/acc"] for n in tallies if roles[n] == "ood")
        out.update({f"{stage}/{k}": v for k, v in ood.items()})
    if id_ is not None:
        out[f"{stage}/acc_id"] = id_["acc"]
        if ood is not None:
            out[f"{stage}/ood_gap"] = id_["acc"] - out[f"{stage}/acc_avg"]
    if train is not None:
        out[f"{stage}/acc_train"] = train["acc"]
    return out

"""Metrics from per-group tallies, with stable keys.

Per environment: `{stage}/{env}/acc`, `acc_wg` (worst group), `acc_balanced` (mean per-group accuracy over the
groups with samples: SubpopBench's `adjusted_accuracy`),
`acc_g{g}` (accuracy of group g = y * n_attr + a, for each group with samples), `ece`, `brier`,
`spurious_reliance`, `causal_sensitivity`. Aggregates over the shifted (`ood`) environments, pooled:
`{stage}/acc_avg`, `acc_wg`, `acc_balanced`, `acc_g{g}`, `ece`, `brier`, `acc_worst_env`, `spurious_reliance`,
`causal_sensitivity`; over the held-out in-distribution ones: `acc_id` and `acc_wg_id`; over the training
data: `acc_train`; and `ood_gap = acc_id - acc_avg`.

`spurious_reliance` is the fraction of predictions that change when only the spurious attribute is
intervened on (set to another value); `causal_sensitivity` the same for the causal feature.
`ece` is the expected calibration error of the top-label confidence over `N_BINS` equal-width bins (Guo et al.
2017) and `brier` the squared error of the predicted probabilities against the one-hot label, summed over classes
(Brier 1950's multi-class score). Neither is SubpopBench's: it reports, for two classes only, sklearn's
`brier_score_loss` of the positive class's probability, (p_1 - y)^2, which is half of `brier` with two classes,
and netcal's ECE of that probability over 10 bins.
"""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

N_BINS = 15  # confidence bins of the ECE, as in Guo et al. 2017 ("On calibration of modern neural networks")


def tally_size(n_groups: int) -> int:
    """Length of a tally: per group correct and count, per confidence bin correct and confidence, the summed
    Brier score, and the flips under do(a) and do(causal)."""
    return 2 * n_groups + 2 * N_BINS + 3


def tally(probs: Tensor, y: Tensor, g: Tensor, n_groups: int,
          pred_a: Tensor | None = None, pred_c: Tensor | None = None) -> Tensor:
    """One tensor of sums (see `tally_size`) from the predicted probabilities `[n, classes]`, labels and group ids
    of a batch, so that distributed ranks can sum their tallies in a single all-reduce."""
    conf, pred = probs.max(1)
    right = (pred == y).double()
    correct = torch.bincount(g, weights=right, minlength=n_groups)
    total = torch.bincount(g, minlength=n_groups).double()
    bins = (conf * N_BINS).long().clamp(0, N_BINS - 1)
    bin_correct = torch.bincount(bins, weights=right, minlength=N_BINS)
    bin_conf = torch.bincount(bins, weights=conf.double(), minlength=N_BINS)
    brier = (probs.double() - F.one_hot(y, probs.shape[1])).square().sum()
    flips = [(p != pred).sum().double() if p is not None else pred.new_zeros((), dtype=torch.double)
             for p in (pred_a, pred_c)]
    return torch.cat([correct, total, bin_correct, bin_conf, brier[None], torch.stack(flips)])


def other_values(v: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """A different value for each entry, uniformly among the k - 1 others."""
    shift = torch.randint(1, k, v.shape, generator=gen).to(v.device)
    return (v + shift) % k


def score(predict: Callable[[Tensor], list[Tensor]], env: Any, batch: Any,
          cf_gen: torch.Generator | None = None) -> Tensor:
    """The tallies `[heads, tally_size]` of one batch of environment `env` under `predict`, which maps inputs to
    the logits of one or more heads (the model's, and the probe's on the same features); with a generator for
    the counterfactual values, they also count the predictions that flip under do(a) and do(causal)."""
    logits = predict(batch.x)
    pred_a = pred_c = [None] * len(logits)
    if cf_gen is not None and "a" in env.interventions:
        pred_a = [z.argmax(1) for z in predict(env.intervene(batch, a=other_values(batch.a, env.n_attr, cf_gen)))]
    if cf_gen is not None and "causal" in env.interventions:
        causal = other_values(env.causal(batch), env.n_classes, cf_gen)
        pred_c = [z.argmax(1) for z in predict(env.intervene(batch, causal=causal))]
    g = env.group(batch)
    return torch.stack([tally(z.softmax(1), batch.y, g, env.n_groups, pa, pc)
                        for z, pa, pc in zip(logits, pred_a, pred_c)])


def env_metrics(t: Tensor, interventions: tuple[str, ...], weights: Tensor | None = None) -> dict[str, float]:
    """The metrics of one tally. With `weights` (per group), `acc` is the per-group accuracy weighted by them:
    the accuracy the samples would have if their groups were distributed as `weights` (WILDS' adjusted average)."""
    n_groups = (len(t) - 2 * N_BINS - 3) // 2
    correct, total = t[:n_groups], t[n_groups:2 * n_groups]
    bin_correct, bin_conf = t[2 * n_groups:2 * n_groups + N_BINS], t[2 * n_groups + N_BINS:2 * n_groups + 2 * N_BINS]
    n = total.sum().item()
    seen = total > 0
    acc_g = correct[seen] / total[seen]
    acc = correct.sum().item() / n
    if weights is not None:
        w = weights.to(acc_g)[seen]
        acc = ((w * acc_g).sum() / w.sum()).item()
    out = {"acc": acc, "acc_wg": acc_g.min().item(), "acc_balanced": acc_g.mean().item(),
           "ece": (bin_correct - bin_conf).abs().sum().item() / n, "brier": t[-3].item() / n}
    out |= {f"acc_g{g}": a for g, a in zip(seen.nonzero().flatten().tolist(), acc_g.tolist())}
    if "a" in interventions:
        out["spurious_reliance"] = t[-2].item() / n
    if "causal" in interventions:
        out["causal_sensitivity"] = t[-1].item() / n
    return out


def summarize(stage: str, tallies: dict[str, Tensor], roles: dict[str, str], interventions: tuple[str, ...],
              weights: dict[str, Tensor] | None = None) -> dict[str, float]:
    """Per-environment and aggregate metrics under `{stage}/...` keys. `weights[role]`, where given, are the
    group frequencies that the accuracy of that role's environments stands for (`ShiftedEnv.group_weights`)."""
    weights = weights or {}
    out: dict[str, float] = {}
    for name, t in tallies.items():
        metrics = env_metrics(t, interventions, weights.get(roles[name]))
        out.update({f"{stage}/{name}/{k}": v for k, v in metrics.items()})

    def pooled(role: str) -> dict[str, float] | None:
        ts = [t for name, t in tallies.items() if roles[name] == role]
        return env_metrics(torch.stack(ts).sum(0), interventions, weights.get(role)) if ts else None

    ood, id_, train = pooled("ood"), pooled("id"), pooled("train")
    if ood is not None:
        out[f"{stage}/acc_avg"] = ood.pop("acc")
        out[f"{stage}/acc_worst_env"] = min(out[f"{stage}/{n}/acc"] for n in tallies if roles[n] == "ood")
        out.update({f"{stage}/{k}": v for k, v in ood.items()})
    if id_ is not None:
        out[f"{stage}/acc_id"] = id_["acc"]
        out[f"{stage}/acc_wg_id"] = id_["acc_wg"]
        if ood is not None:
            out[f"{stage}/ood_gap"] = id_["acc"] - out[f"{stage}/acc_avg"]
    if train is not None:
        out[f"{stage}/acc_train"] = train["acc"]
    return out

import pytest
import torch
import torch.nn.functional as F

from testbed.training.metrics import env_metrics, summarize, tally


def confident(pred: torch.Tensor, k: int = 2) -> torch.Tensor:
    """Probability 1 on the predicted class."""
    return F.one_hot(pred, k).double()


def test_tally_and_summary_on_a_hand_made_example():
    y = torch.tensor([0, 0, 1, 1])
    a = torch.tensor([0, 1, 1, 1])
    pred = torch.tensor([0, 1, 1, 0])
    pred_a = torch.tensor([1, 1, 1, 0])  # one of four predictions flips under do(a)
    ood = tally(confident(pred), y, y * 2 + a, 4, pred_a, pred)
    id_ = tally(confident(torch.tensor([0, 1])), torch.tensor([0, 1]), torch.tensor([0, 3]), 4, None, None)
    m = summarize("test", {"ood:corr=0.10": ood, "id:corr=0.90": id_},
                  {"ood:corr=0.10": "ood", "id:corr=0.90": "id"}, ("a", "causal"))
    assert m["test/acc_avg"] == pytest.approx(0.5)
    assert m["test/acc_wg"] == 0.0  # group (y=0, a=1) is always wrong
    assert m["test/ood:corr=0.10/acc"] == pytest.approx(0.5)
    # groups 0 (y=0, a=0): 1/1 right, 1 (y=0, a=1): 0/1, 3 (y=1, a=1): 1/2; group 2 has no sample and no key
    assert {k: v for k, v in m.items() if "/acc_g" in k and "ood:" in k} == {
        "test/ood:corr=0.10/acc_g0": 1.0, "test/ood:corr=0.10/acc_g1": 0.0, "test/ood:corr=0.10/acc_g3": 0.5}
    assert m["test/acc_balanced"] == pytest.approx(0.5)
    assert m["test/spurious_reliance"] == pytest.approx(0.25)
    assert m["test/causal_sensitivity"] == 0.0
    assert m["test/acc_id"] == 1.0 and m["test/acc_wg_id"] == 1.0
    assert m["test/ood_gap"] == pytest.approx(0.5)


def calibration(probs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    m = env_metrics(tally(probs, y, y, 2), ())
    return m["ece"], m["brier"]


def test_calibration_on_cases_with_known_answers():
    y = torch.tensor([0, 1] * 50)
    # (0.5, 0.5) on a balanced set: right half the time with confidence 0.5; each sample's squared error 0.25 + 0.25
    assert calibration(torch.full((100, 2), 0.5, dtype=torch.double), y) == pytest.approx((0.0, 0.5))
    # confidence 1, right half the time: ECE 0.5; the wrong half costs 1 + 1
    assert calibration(confident(torch.zeros(100, dtype=torch.long)), y) == pytest.approx((0.5, 1.0))
    # perfect confident predictions
    assert calibration(confident(y), y) == pytest.approx((0.0, 0.0))


def test_calibration_sums_over_batches_and_ranks_like_one_pass():
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(300, 3, generator=gen, dtype=torch.double).softmax(1)
    y = torch.randint(3, (300,), generator=gen)
    whole = env_metrics(tally(probs, y, y, 3), ())
    parts = env_metrics(sum(tally(probs[i:i + 70], y[i:i + 70], y[i:i + 70], 3) for i in range(0, 300, 70)), ())
    assert parts == pytest.approx(whole)
    # the ECE by its definition: bins of equal width, |accuracy - confidence| weighted by the bin's share
    conf, pred = probs.max(1)
    bins = (conf * 15).long()
    ece = sum(abs((pred[b] == y[b]).double().mean() - conf[b].mean()) * b.double().mean()
              for b in (bins == k for k in bins.unique()))
    assert whole["ece"] == pytest.approx(ece.item())


def test_weighted_accuracy_is_the_per_group_accuracy_under_other_group_frequencies():
    """WILDS' adjusted average: a group-balanced held-out split scored as if distributed like training."""
    y = torch.tensor([0, 0, 1, 1])
    g = torch.tensor([0, 1, 2, 3])
    t = tally(confident(torch.tensor([0, 1, 1, 1])), y, g, 4)  # group 1 wrong, the others right
    assert env_metrics(t, ())["acc"] == 0.75
    assert env_metrics(t, (), torch.tensor([0.45, 0.05, 0.05, 0.45]))["acc"] == pytest.approx(0.95)

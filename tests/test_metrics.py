import pytest
import torch

from testbed.metrics import summarize, tally


def test_tally_and_summary_on_a_hand_made_example():
    y = torch.tensor([0, 0, 1, 1])
    a = torch.tensor([0, 1, 1, 1])
    pred = torch.tensor([0, 1, 1, 0])
    pred_a = torch.tensor([1, 1, 1, 0])  # one of four predictions flips under do(a)
    ood = tally(pred, y, y * 2 + a, 4, pred_a, pred)
    id_ = tally(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0, 3]), 4, None, None)
    m = summarize("test", {"ood:corr=0.10": ood, "id:corr=0.90": id_},
                  {"ood:corr=0.10": "ood", "id:corr=0.90": "id"}, ("a", "causal"))
    assert m["test/acc_avg"] == pytest.approx(0.5)
    assert m["test/acc_wg"] == 0.0  # group (y=0, a=1) is always wrong
    assert m["test/ood:corr=0.10/acc"] == pytest.approx(0.5)
    assert m["test/spurious_reliance"] == pytest.approx(0.25)
    assert m["test/causal_sensitivity"] == 0.0
    assert m["test/acc_id"] == 1.0
    assert m["test/ood_gap"] == pytest.approx(0.5)

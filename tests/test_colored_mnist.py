"""ColoredMNIST on a tiny MNIST in torchvision's on-disk format, read by torchvision's own loader."""

import pytest
import torch
from conftest import CONFIGS, QUIET, results, run_cli
from fake_data import write_mnist

from testbed.envs import ColoredMNIST
from testbed.errors import ConfigError

SIZES = {"n_train": 2000, "n_val": 400, "n_test": 1000}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(write_mnist(tmp_path_factory.mktemp("data"), n_train=2400, n_test=1000))


def make(root: str, **kw) -> ColoredMNIST:
    env = ColoredMNIST(root=root, **{**SIZES, **kw})
    env.setup()
    return env


def test_loads_digits_with_the_arjovsky_settings(root):
    env = make(root)
    assert env.input_shape == (2, 14, 14)
    assert [s.name for s in env.specs] == ["train:corr=0.90", "train:corr=0.80", "id:corr=0.90", "id:corr=0.80",
                                           "ood:corr=0.10", "ood:corr=0.50"]
    assert [len(env.data[n].y) for n in env.names("train", "id", "ood")] == [1000, 1000, 1000, 1000, 1000, 1000]
    # Every image is an MNIST digit with every other pixel kept, in one of two channels.
    raw = torch.cat([m.data for m in env.mnist.values()])[:, ::2, ::2]
    originals = {bytes(d.numpy()) for d in raw}
    b = env.data["ood:corr=0.10"]
    gray = (b.x.amax(1) * 255).round().to(torch.uint8)
    assert all(bytes(d.numpy()) in originals for d in gray)
    assert torch.equal(b.x[torch.arange(len(b.a)), 1 - b.a], torch.zeros_like(gray, dtype=b.x.dtype))


@pytest.mark.parametrize("name,corr", [("train:corr=0.90", 0.9), ("train:corr=0.80", 0.8), ("ood:corr=0.10", 0.1)])
def test_colour_agrees_with_the_label_at_the_configured_rate(root, name, corr):
    b = make(root).data[name]
    assert abs((b.a == b.y).float().mean().item() - corr) < 0.04


def test_label_is_digit_below_five_with_label_noise(root):
    env = make(root)
    b = env.data["ood:corr=0.50"]
    assert torch.equal(env.causal(b), (b.z[:, 0] < 5).long())
    assert abs((env.causal(b) != b.y).float().mean().item() - 0.25) < 0.04


def test_intervene_recolours_the_same_digit(root):
    env = make(root)
    b = env.data["ood:corr=0.10"]
    assert env.interventions == ("a",)
    assert torch.equal(env.intervene(b, a=b.a), b.x)
    recoloured = env.intervene(b, a=1 - b.a)
    rows = torch.arange(len(b.a))
    assert torch.equal(recoloured[rows, 1 - b.a], b.x[rows, b.a])  # the digit moved to the other channel
    assert torch.equal(recoloured[rows, b.a], torch.zeros_like(recoloured[:, 0]))
    with pytest.raises(NotImplementedError):
        env.intervene(b, causal=1 - env.causal(b))


def test_saliency_zero_hides_the_colour(root):
    env = make(root, spurious_saliency=0.0)
    b = env.data["ood:corr=0.10"]
    assert torch.equal(env.intervene(b, a=1 - b.a), b.x)


def test_more_training_digits_extend_fewer_and_keep_the_test_set(root):
    small, large = make(root, n_train=1000), make(root)
    s, l_ = small.data["train:corr=0.80"], large.data["train:corr=0.80"]
    assert all(torch.equal(u, v[: len(u)]) for u, v in zip(s, l_))
    assert torch.equal(small.data["ood:corr=0.10"].x, large.data["ood:corr=0.10"].x)


def test_validation_digits_are_neither_tested_nor_trained_on(root):
    env = make(root)
    digits = lambda batch: {tuple(row) for row in batch.x.amax(1).flatten(1).tolist()}  # noqa: E731
    seen = set().union(*(digits(env.data[n]) for n in env.names("train", "id", "ood")))
    for name in env.names("id", "ood"):
        assert len(env.val_data[name].y) == 400 and not digits(env.val_data[name]) & seen


def test_image_size_is_a_knob(root):
    assert make(root, image_size=28).data["ood:corr=0.10"].x.shape[1:] == (2, 28, 28)


@pytest.mark.parametrize("kw,message", [
    ({"n_train": 2001}, "n_train: 2001 is not allowed; at most 2000 MNIST digits are set aside for it"),
    ({"n_val": 401}, "n_val: 401 is not allowed; at most 400 MNIST digits are set aside for it"),
    ({"n_test": 1001}, "n_test: 1001 is not allowed; at most 1000 MNIST digits are set aside for it"),
    ({"label_noise": 1.5}, "label_noise"),
])
def test_bad_knobs_name_the_field(root, kw, message):
    with pytest.raises(ConfigError, match=message):
        ColoredMNIST(root=root, **{**SIZES, **kw})


def test_erm_learns_the_colour_through_the_cli(workdir, root):
    """Arjovsky et al.'s regime on real-format data: ERM follows the colour and fails where it reverses."""
    run_cli("fit", "-c", str(CONFIGS / "envs/colored_mnist.yaml"), "-c", str(CONFIGS / "baselines/erm.yaml"),
            *QUIET, f"--data.root={root}", *(f"--data.{k}={v}" for k, v in SIZES.items()), "--trainer.max_epochs=3")
    run = results(workdir / "runs/lightning_logs/version_0")
    m = run["metrics"]
    assert run["data"] == "ColoredMNIST" and run["n_train"] == 2000
    assert m["test/acc_train"] >= 0.8
    assert m["test/ood:corr=0.10/acc"] <= 0.35
    assert m["test/spurious_reliance"] >= 0.7
    assert "test/causal_sensitivity" not in m

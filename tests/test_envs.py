import pytest
import torch

from testbed.envs import GaussianGroups, SpuriousShapes, SpuriousText
from testbed.envs.base import Batch, TensorLoader
from testbed.errors import ConfigError


def make(**kw) -> SpuriousShapes:
    env = SpuriousShapes(**{"n_train": 4000, "n_val": 500, "n_test": 4000, **kw})
    env.setup()
    return env


def test_same_seed_same_data_and_other_seed_differs():
    a, b, c = make(), make(), make(seed=1)
    for name in a.data:
        assert all(torch.equal(s, t) for s, t in zip(a.data[name], b.data[name]))
    assert not torch.equal(a.data["train:corr=0.90"].x, c.data["train:corr=0.90"].x)


def test_more_training_data_extends_less_and_keeps_the_test_set():
    small, large = make(n_train=1000), make(n_train=4000)
    s, l_ = small.data["train:corr=0.90"], large.data["train:corr=0.90"]
    assert torch.equal(s.x, l_.x[: len(s.x)])
    assert torch.equal(small.data["ood:corr=0.10"].x, large.data["ood:corr=0.10"].x)


def test_validation_samples_are_drawn_apart_from_test_samples():
    env = make(n_classes=4, causal_difficulty=0.5)
    assert list(env.val_data) == env.names("id", "ood")
    for name in env.names("id", "ood"):
        val, test = env.val_data[name], env.data[name]
        assert (len(val.y), len(test.y)) == (500, 4000)
        assert not {tuple(z) for z in val.z.tolist()} & {tuple(z) for z in test.z.tolist()}  # no shared latents


@pytest.mark.parametrize("env", [SpuriousText(n_train=40, n_val=30, n_test=50),
                                 GaussianGroups(n_train=40, n_val=30, n_test=50)], ids=["text", "gaussian"])
def test_token_and_vector_environments_give_validation_samples_apart_from_their_test_samples(env):
    env.setup()
    assert list(env.val_data) == env.names("id", "ood")
    for name in env.names("id", "ood"):
        val, test = env.val_data[name], env.data[name]
        assert len(val.y) == 30
        assert not {tuple(x) for x in val.x.tolist()} & {tuple(x) for x in test.x.tolist()}


def test_pixel_noise_is_fresh_per_sample_and_seeded():
    env = make(causal_difficulty=0.5)
    keys = torch.cat([env.data["train:corr=0.90"].z, env.data["ood:corr=0.10"].z])[:, 4:6]
    noise = env.noise(keys).flatten(1)
    assert len(noise.unique(dim=0)) == len(keys)  # no bank: every sample has its own noise
    assert torch.equal(noise, make(causal_difficulty=0.5).noise(keys).flatten(1))


@pytest.mark.parametrize("name,corr", [("train:corr=0.90", 0.9), ("train:corr=0.80", 0.8), ("ood:corr=0.10", 0.1)])
def test_attribute_agrees_with_label_at_the_configured_rate(name, corr):
    b = make().data[name]
    assert abs((b.a == b.y).float().mean().item() - corr) < 0.03


def test_label_noise_flips_the_causal_class_at_the_configured_rate():
    env = make(label_noise=0.25)
    b = env.data["ood:corr=0.50"]
    assert abs((env.causal(b) != b.y).float().mean().item() - 0.25) < 0.03


def test_p_break_decorrelates_that_fraction_of_training_samples():
    b = make(train_corrs=(1.0,), p_break=0.2).data["train:corr=1.00"]
    # Broken samples get a uniform attribute: half of them disagree with the label.
    assert abs((b.a != b.y).float().mean().item() - 0.1) < 0.03


@pytest.mark.parametrize("feature", ["color", "background", "patch"])
def test_intervene_changes_only_the_factor_it_sets(feature):
    env = make(spurious_feature=feature, causal_difficulty=0.3, n_classes=4)
    b = env.data["ood:corr=0.10"]
    assert torch.equal(env.intervene(b, a=b.a), b.x)  # do(a = its own value) reproduces the image exactly
    flipped_a = env.intervene(b, a=(b.a + 1) % 4)
    flipped_c = env.intervene(b, causal=(env.causal(b) + 1) % 4)
    assert (flipped_a != b.x).flatten(1).any(1).all()
    assert (flipped_c != b.x).flatten(1).any(1).float().mean() > 0.99


def test_do_colour_keeps_the_shape_and_do_shape_keeps_the_colour():
    env = make(n_classes=4)
    b = env.data["ood:corr=0.10"]
    flipped_a = env.intervene(b, a=(b.a + 1) % 4)
    flipped_c = env.intervene(b, causal=(env.causal(b) + 1) % 4)
    support = lambda x: x.sum(1) > 0  # noqa: E731
    assert torch.equal(support(flipped_a), support(b.x))
    assert torch.equal(flipped_c.amax((2, 3)), b.x.amax((2, 3)))


def test_saliency_zero_hides_the_attribute():
    env = make(spurious_saliency=0.0)
    b = env.data["ood:corr=0.10"]
    assert torch.equal(env.intervene(b, a=1 - b.a), b.x)


@pytest.mark.parametrize("kw,field", [
    ({"train_corrs": (1.5, 0.8)}, "train_corrs"), ({"label_noise": -0.1}, "label_noise"),
    ({"n_train": -5}, "n_train"), ({"n_classes": 9}, "n_classes"), ({"test_corrs": (0.1, 0.1)}, "environments"),
])
def test_bad_knobs_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        SpuriousShapes(**kw)


def test_shuffle_orders_of_neighbouring_seeds_do_not_repeat_each_other():
    """Seed s + 1 at epoch e must not replay seed s at epoch e + 1 (as `seed + epoch` did), nor repeat itself."""
    data = Batch(*(torch.arange(64),) * 5)

    def orders(seed: int, passes: int) -> list[list[int]]:
        loader = TensorLoader(data, batch_size=64, shuffle=True, seed=seed)
        return [next(iter(loader)).y.tolist() for _ in range(passes)]

    first, second = orders(0, 3), orders(1, 3)
    assert first[1] != second[0] and first[2] != second[1]
    assert len({tuple(o) for o in first + second}) == 6
    assert orders(0, 3) == first  # still a function of (seed, epoch) alone

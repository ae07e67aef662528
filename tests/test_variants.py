"""`ShiftedEnv.variant` for every environment, and seeds that follow a sub-environment's name, not its position."""

import pytest
import torch
from fake_data import write_mnist, write_waterbirds

from testbed.baselines import ContinualFinetune
from testbed.envs import ColoredMNIST, GaussianGroups, SpuriousShapes, SpuriousText, Waterbirds
from testbed.envs.base import Batch, EnvSpec, ShiftedEnv
from testbed.errors import ConfigError

BIRDS = {"train": {(0, 0): 12, (0, 1): 3, (1, 0): 3, (1, 1): 12},
         "val": {(0, 0): 2, (0, 1): 2, (1, 0): 2, (1, 1): 2},
         "test": {(0, 0): 2, (0, 1): 2, (1, 0): 2, (1, 1): 2}}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("data")
    write_mnist(folder, n_train=600, n_test=200)
    write_waterbirds(folder, BIRDS)
    return str(folder)


def same(a: Batch, b: Batch) -> bool:
    """The same samples (`e`, the sub-environment's index, is its position)."""
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("x", "y", "a", "z"))


def test_colored_mnist_varies_from_its_own_arguments_not_the_defaults(root):
    """ColoredMNIST saved no hyperparameters: a phase `{}` was rebuilt with every default (another data root)."""
    env = ColoredMNIST(root=root, n_train=300, n_val=50, n_test=100, label_noise=0.1)
    phase = env.variant(train_corrs=[0.1])
    assert phase.names("train") == ["train:corr=0.10"]
    assert (phase.n_train, phase.n_test, phase.label_noise) == (300, 100, 0.1)
    assert env.variant().names("ood") == env.names("ood")


def test_wilds_environment_varies_keeping_its_root_and_size(root):
    env = Waterbirds(root=root, image_size=8, n_train=10)
    phase = env.variant(train_corr=0.5)
    phase.setup()
    assert phase.input_shape == (3, 8, 8) and len(phase.train_data.y) == 10


@pytest.mark.parametrize("env", [SpuriousText(n_train=40, n_val=10, n_test=10),
                                 GaussianGroups(n_train=40, n_val=10, n_test=10, d_core=3, d_spu=3)],
                         ids=["SpuriousText", "GaussianGroups"])
def test_every_environment_varies_one_knob_and_keeps_the_others(env):
    knob, value = ("label_noise", 0.0) if isinstance(env, SpuriousText) else ("majority", 0.7)
    phase = env.variant(**{knob: value})
    assert phase.init_args[knob] == value and phase.init_args["n_train"] == 40
    with pytest.raises(ConfigError, match=r"has no knob 'colour' to vary; it has .*n_train"):
        env.variant(colour=1)


class Positional(ShiftedEnv):
    n_classes, input_shape = 2, (1,)

    def __init__(self, *sizes: int) -> None:
        super().__init__()
        self.specs = [EnvSpec("train", 0.9), EnvSpec("ood", 0.1)]


def test_an_environment_whose_arguments_have_no_names_refuses_to_vary():
    with pytest.raises(ConfigError, match="Positional cannot be varied: its __init__ takes \\*args"):
        Positional(3, 4).variant(seed=1)


def shapes(**kw) -> SpuriousShapes:
    env = SpuriousShapes(**{"n_train": 200, "n_val": 50, "n_test": 100, **kw})
    env.setup()
    return env


def test_adding_a_training_environment_keeps_the_shifted_test_images(root):
    for make in (shapes, lambda **kw: ColoredMNIST(root=root, n_train=300, n_val=50, n_test=100, **kw),
                 lambda **kw: SpuriousText(n_train=60, n_val=20, n_test=20, **kw)):
        one, two = make(train_corrs=(0.9,)), make(train_corrs=(0.7, 0.9))
        one.setup(), two.setup()
        for name in one.names("id", "ood"):
            if name in two.data:
                assert same(one.data[name], two.data[name])
                assert name not in one.val_data or same(one.val_data[name], two.val_data[name])
        assert same(one.data["ood:corr=0.10"], two.data["ood:corr=0.10"])


def test_continual_finetune_phases_draw_other_samples_even_with_the_same_names():
    """Phases are new data: p2 changes only the spurious feature, so its sub-environments have p0's names."""
    env = shapes()
    phases = ContinualFinetune(phases=({}, {"train_corrs": [0.1]}, {"spurious_feature": "background"}),
                               future=({"spurious_feature": "background", "train_corrs": [0.1]},)).variants(env)
    for e in phases.values():
        e.setup()
    assert same(phases["p0"].data["ood:corr=0.10"], env.data["ood:corr=0.10"])  # `{}` is the environment as configured
    assert phases["p2"].names("train", "id", "ood") == env.names("train", "id", "ood")
    latents = {k: {tuple(z) for z in e.train_data.z[:, :4].tolist()} for k, e in phases.items()}
    keys = sorted(latents)
    for i, k in enumerate(keys):
        for other in keys[i + 1:]:
            assert len(latents[k] & latents[other]) < 0.05 * len(latents[k]), (k, other)

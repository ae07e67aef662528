"""Waterbirds, CelebA and WildsEnv on tiny copies in WILDS' on-disk formats, read by WILDS' own loaders."""

import lightning as L
import pytest
import torch
from conftest import CONFIGS, QUIET, results, run_cli
from fake_data import LAND, WATER, write_celeba, write_waterbirds

from testbed.baselines import ERM, Online, Oracle
from testbed.envs import CelebA, Waterbirds, WildsEnv
from testbed.errors import ConfigError

# Samples per (label, attribute) group in each split: the training split is spurious, the others balanced.
GROUPS = {
    "train": {(0, 0): 30, (0, 1): 6, (1, 0): 4, (1, 1): 20},
    "val": {(0, 0): 3, (0, 1): 3, (1, 0): 3, (1, 1): 3},
    "test": {(0, 0): 5, (0, 1): 5, (1, 0): 5, (1, 1): 5},
}


def counts(split: str) -> list[list[int]]:
    return [[GROUPS[split][(y, a)] for a in (0, 1)] for y in (0, 1)]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("data")
    write_waterbirds(folder, GROUPS)
    write_celeba(folder, GROUPS)
    return str(folder)


@pytest.mark.parametrize("cls", [Waterbirds, CelebA])
def test_splits_become_sub_environments_with_their_group_counts(root, cls):
    env = cls(root=root, image_size=8)
    assert [s.name for s in env.specs] == ["train:train", "id:val", "ood:test"]
    assert [s.corr for s in env.specs] == pytest.approx([50 / 60, 0.5, 0.5])
    assert {n: c.tolist() for n, c in env.group_counts().items()} == {
        "train:train": counts("train"), "id:val": counts("val"), "ood:test": counts("test")}
    assert env.interventions == () and (env.n_classes, env.n_attr) == (2, 2)


def test_held_out_splits_give_validation_samples_apart_from_their_test_samples(root):
    env = Waterbirds(root=root, image_size=8)
    env.setup()
    for name in env.names("id", "ood"):
        val, test = set(env.val_data[name].z[:, 0].tolist()), set(env.data[name].z[:, 0].tolist())
        assert val and test and not val & test  # z holds the dataset row of each sample
        assert sorted(val | test) == sorted(env.val_rows[name].tolist() + env.rows[name].tolist())


def test_images_are_decoded_once_as_uint8_and_normalised_on_the_device(root):
    env = Waterbirds(root=root, image_size=8)
    env.setup()
    b = env.data["train:train"]
    assert b.x.dtype == torch.uint8 and b.x.shape == (60, 3, 8, 8)
    # The background colour of each photo matches its place in metadata.csv: rows were read in order.
    corner = b.x[:, :, 0, 0].float()
    expected = torch.tensor([WATER if a else LAND for a in b.a.tolist()], dtype=torch.float)
    assert (corner - expected).abs().max() < 12
    x = env.on_after_batch_transfer(b, 0).x
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 3


@pytest.mark.parametrize("corr,expected", [
    (0.5, [[6, 6], [4, 4]]), (0.9, [[30, 3], [2, 20]]), (1.0, [[30, 0], [0, 20]]),
])
def test_training_data_are_resampled_to_the_target_correlation(root, corr, expected):
    env = Waterbirds(root=root, image_size=8, train_corr=corr)
    assert env.group_counts()["train:train"].tolist() == expected
    assert env.group_counts()["ood:test"].tolist() == counts("test")
    env.setup()
    b = env.data["train:train"]
    assert (b.a == b.y).double().mean().item() == pytest.approx(env.specs[0].corr)
    assert abs(env.specs[0].corr - corr) < 0.05


def test_celeba_resamples_hair_colour_against_sex(root):
    env = CelebA(root=root, image_size=8, train_corr=0.25)
    assert env.group_counts()["train:train"].tolist() == [[2, 6], [4, 1]]


def test_more_training_samples_extend_fewer_and_keep_group_proportions(root):
    small, large = (Waterbirds(root=root, image_size=8, n_train=n) for n in (20, 40))
    s, l_ = small.rows["train:train"], large.rows["train:train"]
    assert torch.equal(s, l_[:20])
    assert small.group_counts()["train:train"].tolist() == [[10, 2], [1, 7]]


def test_query_draws_training_samples_with_the_attribute(root):
    env = Waterbirds(root=root, image_size=8, train_corr=0.5)
    wanted = torch.tensor([1] * 50 + [0] * 50)
    b = env.query(a=wanted, generator=torch.Generator().manual_seed(0))
    assert b.x.shape == (100, 3, 8, 8) and torch.equal(b.a, wanted) and (b.e == 0).all()
    assert (b.y[:50] == 1).sum() > 50 * 0.6  # drawn from the whole training split, where water goes with waterbirds


def test_online_learner_queries_a_dataset_without_a_renderer(root):
    """Queried samples are raw uint8 like the stored data; Online turns them into model inputs first."""
    env = Waterbirds(root=root, image_size=8, batch_size=8)
    model = Online(fraction=0.5, budget=32, arch="mlp", width=8,
                   input_shape=env.input_shape, n_classes=env.n_classes)
    model.check_env(env)
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model, datamodule=env)
    assert model.total_samples >= 32


def test_any_wilds_dataset_with_a_chosen_field_and_split_roles(root):
    env = WildsEnv("celebA", "male", root=root, image_size=8, splits={"train": "train", "test": "ood"})
    assert [s.name for s in env.specs] == ["train:train", "ood:test"]
    with pytest.raises(ConfigError, match="spurious_field: 'hair' is not allowed; choose one of male"):
        WildsEnv("celebA", "hair", root=root)
    with pytest.raises(ConfigError, match="splits: 'id_val' is not allowed; choose one of train, val, test"):
        WildsEnv("waterbirds", "background", root=root, splits={"id_val": "id"})


def test_bad_knobs_name_the_field(root):
    with pytest.raises(ConfigError, match="n_train: 61 is not allowed; waterbirds has 60 training samples"):
        Waterbirds(root=root, n_train=61)
    with pytest.raises(ConfigError, match="train_corr: 1.5 is outside"):
        Waterbirds(root=root, train_corr=1.5)
    with pytest.raises(ConfigError, match="dataset: 'birds' is not allowed"):
        WildsEnv("birds", "background", root=root)


def test_oracle_needs_interventions_that_wilds_data_cannot_give(root):
    with pytest.raises(ConfigError, match="Oracle needs an environment that can intervene"):
        Oracle().check_env(Waterbirds(root=root, image_size=8))


def test_erm_trains_on_waterbirds_through_the_cli(workdir, root):
    run_cli("fit", "-c", str(CONFIGS / "envs/waterbirds.yaml"), "-c", str(CONFIGS / "baselines/erm.yaml"), *QUIET,
            f"--data.root={root}", "--data.image_size=8", "--data.num_workers=0", "--data.train_corr=0.9",
            "--trainer.max_epochs=1")
    run = results(workdir / "runs/lightning_logs/version_0")
    assert run["data"] == "Waterbirds" and run["n_train"] == 55
    assert {"test/train:train/acc", "test/id:val/acc_wg", "test/ood:test/acc", "test/acc_wg"} <= set(run["metrics"])
    assert {"probe/acc_avg", "probe/acc_wg", "test/ece", "test/brier"} <= set(run["metrics"])
    assert not any("spurious_reliance" in k for k in run["metrics"])


def per_group(metrics: dict, key: str) -> torch.Tensor:
    return torch.tensor([metrics[f"{key}/acc_g{g}"] for g in range(4)], dtype=torch.double)


def test_waterbirds_id_accuracy_is_the_adjusted_average_over_training_group_frequencies(root):
    """Waterbirds' validation split is group-balanced: its plain accuracy would not be the ID accuracy."""
    env = Waterbirds(root=root, image_size=8)
    weights = env.role_weights()
    assert weights["id"].tolist() == pytest.approx([30 / 60, 6 / 60, 4 / 60, 20 / 60]) and "ood" not in weights
    env.setup()
    model = ERM(arch="mlp", width=8, input_shape=env.input_shape, n_classes=2)  # any model: scored untrained
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, datamodule=env, verbose=False)
    m = model.results
    adjusted = (per_group(m, "test/id:val") * weights["id"]).sum().item()
    assert m["test/acc_id"] == pytest.approx(adjusted) and m["test/id:val/acc"] == pytest.approx(adjusted)
    assert m["probe/acc_id"] == pytest.approx((per_group(m, "probe/id:val") * weights["id"]).sum().item())
    # the shifted split keeps its plain accuracy
    assert m["test/acc_avg"] == pytest.approx((per_group(m, "test/ood:test") * 5).sum().item() / 20)


def test_waterbirds_validation_id_accuracy_is_the_same_adjusted_average(root):
    """Selection by `id_val` reads `val/acc_id`: it must be the ID accuracy the test pass reports, not the plain
    accuracy of a group-balanced split (a quietly group-aware rule)."""
    env = Waterbirds(root=root, image_size=8)
    env.setup()
    model = ERM(arch="mlp", width=8, input_shape=env.input_shape, n_classes=2)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, datamodule=env, verbose=False)
    val = model.final_val()
    groups = per_group(val, "val/id:val")
    adjusted = (groups * env.role_weights()["id"]).sum().item()
    assert val["val/acc_id"] == pytest.approx(adjusted) and val["val/id:val/acc"] == pytest.approx(adjusted)
    assert abs(adjusted - groups.mean().item()) > 0.05  # the groups differ, so the weights matter here


def test_scoring_outside_the_loops_weighs_groups_as_the_test_pass_does(root, tmp_path):
    """`evaluate` (continual phases) and Online's curve score outside Lightning's loops: their ID and shifted
    accuracies must be the test pass's adjusted averages, not the plain accuracy of the held-out samples."""
    env = Waterbirds(root=root, image_size=8)
    env.setup()
    model = ERM(arch="mlp", width=8, input_shape=env.input_shape, n_classes=2)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, datamodule=env, verbose=False)
    assert model.evaluate(env, "id")["acc"] == pytest.approx(model.results["test/acc_id"])
    plain = per_group(model.results, "test/id:val").mean().item()  # the validation split is group-balanced
    assert abs(model.results["test/acc_id"] - plain) > 0.02  # so the weights matter here
    # CelebA's shifted split is i.i.d. (scored as the mean per group): here its groups are far from balanced
    write_celeba(tmp_path, {**GROUPS, "test": {(0, 0): 12, (0, 1): 2, (1, 0): 3, (1, 1): 9}})
    celeba = CelebA(root=str(tmp_path), image_size=8, batch_size=8)
    online = Online(fraction=0.5, budget=32, eval_every=1, arch="mlp", width=8, input_shape=celeba.input_shape,
                    n_classes=celeba.n_classes)
    online.check_env(celeba)
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(online, datamodule=celeba)
    trainer.test(online, datamodule=celeba, verbose=False)
    m = online.results
    assert online.curve[-1]["shifted_acc"] == pytest.approx(m["test/acc_avg"])
    assert m["test/acc_avg"] == pytest.approx(per_group(m, "test/ood:test").mean().item())


def test_celeba_shifted_accuracy_is_the_mean_per_group_accuracy_of_its_iid_test_split(root):
    env = CelebA(root=root, image_size=8)
    assert env.role_weights()["ood"].tolist() == [0.25] * 4 and "id" not in env.role_weights()
    assert "id" in CelebA(root=root, image_size=8, train_corr=0.25).role_weights()  # resampled: no longer i.i.d.
    env.setup()
    model = ERM(arch="mlp", width=8, input_shape=env.input_shape, n_classes=2)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, datamodule=env, verbose=False)
    m = model.results
    assert m["test/acc_avg"] == pytest.approx(per_group(m, "test/ood:test").mean().item())
    assert m["test/acc_avg"] == pytest.approx(m["test/acc_balanced"])
    assert m["test/acc_wg"] == per_group(m, "test/ood:test").min().item()


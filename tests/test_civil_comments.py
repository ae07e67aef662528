"""CivilComments read by WILDS' loader from a tiny fake copy, tokenized locally, trained end to end."""

import pytest
import torch
from conftest import CONFIGS, QUIET, cli_error, results, run_cli
from fake_text import write_civilcomments, write_tiny_hf_model
from transformers import AutoConfig, AutoModel

from testbed.envs import CivilComments

BALANCED = {(0, 0): 10, (0, 1): 10, (1, 0): 10, (1, 1): 10}
GROUPS = {"train": {(0, 0): 40, (0, 1): 8, (1, 0): 8, (1, 1): 40}, "val": BALANCED, "test": BALANCED}
TINY = [*QUIET, "-c", str(CONFIGS / "envs/civil_comments.yaml"), "-c", str(CONFIGS / "baselines/erm.yaml"),
        "--data.seq_len=16", "--model.width=8", "--model.depth=1", "--model.heads=2", "--trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("data")
    write_civilcomments(folder, GROUPS)
    write_tiny_hf_model(folder / "tiny-gpt2", "gpt2")
    return str(folder)


def test_comments_become_token_ids_of_a_vocabulary_built_from_the_training_text(root):
    env = CivilComments(root=root, seq_len=16, vocab_size=60)
    env.setup()
    assert [s.name for s in env.specs] == ["train:train", "id:val", "ood:test"]
    assert env.group_counts()["train:train"].tolist() == [[40, 8], [8, 40]]
    assert env.vocab_size <= 60 and env.input_shape == (16,)
    batch = env.data["train:train"]
    assert batch.x.shape == (96, 16) and batch.x.dtype == torch.long and (batch.x[:, 0] == 2).all()  # [CLS] first
    text = env.source.get_input(int(batch.z[0, 0]))
    decoded = env.encoder.decode(batch.x[0].tolist()).replace(" ##", "")
    assert " ".join(text.split())[:20] == decoded[:20]  # the first words survive the round trip


def test_training_comments_are_resampled_and_cut_like_waterbirds(root):
    env = CivilComments(root=root, train_corr=0.5, n_train=16, vocab_size=60)
    assert env.group_counts()["train:train"].tolist() == [[4, 4], [4, 4]]
    assert env.specs[0].corr == 0.5


def test_erm_trains_a_transformer_on_civil_comments_through_the_cli(workdir, root):
    run_cli("fit", *TINY, f"--data.root={root}", "--data.vocab_size=60", "--model.arch=transformer")
    run = results(workdir / "runs/lightning_logs/version_0")
    assert run["data"] == "CivilComments" and run["n_train"] == 96 and run["params"] > 0 and run["train_flops"] > 0
    assert {"test/id:val/acc_wg", "test/ood:test/acc", "test/acc_wg"} <= set(run["metrics"])


def test_erm_trains_a_hugging_face_model_with_its_own_tokenizer(workdir, root):
    model = f"{root}/tiny-gpt2"
    run_cli("fit", *TINY, f"--data.root={root}", f"--data.tokenizer={model}", f"--model.arch=hf:{model}")
    run = results(workdir / "runs/lightning_logs/version_0")
    gpt2 = AutoModel.from_config(AutoConfig.from_pretrained(model))
    assert run["params"] == sum(p.numel() for p in gpt2.parameters()) + 16 * 2 + 2  # the model and its new head
    # It trained on every training comment once and scored every test comment: its accuracy is a tally over the
    # 40 test comments.
    assert run["train_flops"] > 0 and run["train_samples"] == 96 and run["steps"] > 0
    acc = run["metrics"]["test/ood:test/acc"]
    assert abs(acc * 40 - round(acc * 40)) < 1e-9 and "test/ood:test/acc_wg" in run["metrics"]


def test_missing_data_and_mismatched_tokenizers_are_one_line(workdir, root, capsys):
    [line] = cli_error(capsys, "fit", *TINY, "--data.root=nowhere", "--model.arch=transformer")
    assert "civilcomments_v1.0/RELEASE_v1.0.txt, civilcomments_v1.0/all_data_with_identities.csv" in line
    for env in ([f"--data.root={root}"], ["-c", str(CONFIGS / "envs/text_confounded.yaml")]):
        [line] = cli_error(capsys, "fit", *TINY, *env, f"--model.arch=hf:{root}/tiny-gpt2")
        assert f"hf:{root}/tiny-gpt2 reads the ids of its own tokenizer" in line and "data.tokenizer" in line
    assert not (workdir / "runs").exists()

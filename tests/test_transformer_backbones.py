"""The `transformer` and `vit` backbones: the contract every backbone keeps, and FLOPs that count attention."""

import pytest
import torch
from conftest import CONFIGS, QUIET, results, run_cli
from torch import nn

from testbed.errors import ConfigError
from testbed.training.backbones import build_backbone, count_params, training_flops_per_sample


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_transformer_and_vit_end_in_their_linear_head_and_grow_with_width_and_depth(pooling):
    text, image = dict(vocab_size=20, heads=2, pooling=pooling), dict(heads=2, pooling=pooling, patch=4)
    for arch, shape, knobs, x in [("transformer", (12,), text, torch.randint(20, (3, 12))),
                                  ("vit", (3, 16, 16), image, torch.randn(3, 3, 16, 16))]:
        small, wide, deep = (build_backbone(arch, shape, 5, w, d, **knobs) for w, d in [(8, 1), (16, 1), (8, 2)])
        assert isinstance(small, nn.Sequential) and isinstance(small[-1], nn.Linear)
        assert small(x).shape == (3, 5) and small[:-1](x).shape == (3, 8)
        assert count_params(small) < min(count_params(wide), count_params(deep))


def test_padding_changes_neither_the_attention_nor_the_mean_of_the_other_tokens():
    net = build_backbone("transformer", (6,), 2, 8, 2, vocab_size=10, heads=2, pooling="mean").eval()
    x = torch.tensor([[3, 4, 5, 0, 0, 0]])  # 0 pads
    encoder = net[0].encoder
    with torch.no_grad():
        unpadded = encoder.norm(encoder.layers(net[0].embed(x[:, :3]) + encoder.pos[:, :3])).mean(1)
        assert torch.allclose(net[:-1](x), unpadded, atol=1e-5)


def test_training_flops_count_every_linear_layer_and_the_attention():
    """Per sample and layer, L tokens of width w: the linear layers do 2 * L * 12 w^2 forward (qkv 3 w^2, output w^2,
    feed-forward 2 * 4 w^2) and twice that backward; attention does 4 L^2 w forward (QK^T and AV) and 10 L^2 w
    backward (torch's formula: the scores are computed again, then the four gradients)."""
    for length, width, depth in [(16, 32, 1), (8, 16, 2)]:
        net = build_backbone("transformer", (length,), 2, width, depth, vocab_size=20, heads=2, pooling="mean")
        linear = 3 * (depth * 2 * length * 12 * width**2 + 2 * width * 2)
        attention = depth * 14 * length**2 * width
        assert training_flops_per_sample(net, (length,), tokens=True) == linear + attention


def test_bad_transformer_settings_fail_with_one_line_naming_the_field():
    text = dict(vocab_size=20, heads=3, pooling="mean")
    cases = [(("transformer", (8,), 2, 10, 1), text, "heads: 3 does not divide"),
             (("vit", (3, 14, 14), 2, 8, 1), dict(heads=2, pooling="mean", patch=4), "patch: 4 does not divide"),
             (("transformer", (3, 8, 8), 2, 8, 1), {}, "arch: transformer does not take images"),
             (("mlp", (8,), 2, 8, 1), dict(vocab_size=20), "arch: mlp does not take token ids"),
             (("gpt", (8,), 2, 8, 1), {}, "arch: 'gpt' is not allowed; choose one of mlp, cnn")]
    for args, knobs, message in cases:
        with pytest.raises(ConfigError, match=message):
            build_backbone(*args, **knobs)


def test_vit_trains_on_an_image_environment_through_the_cli(workdir):
    run_cli("fit", "-c", str(CONFIGS / "envs/confounded.yaml"), "-c", str(CONFIGS / "baselines/erm.yaml"), *QUIET,
            "--model.arch=vit", "--model.patch=4", "--model.width=8", "--model.depth=1", "--model.heads=2",
            "--data.image_size=8", "--data.n_train=256", "--data.n_val=64", "--data.n_test=64",
            "--trainer.max_epochs=1")
    run = results(workdir / "runs/lightning_logs/version_0")
    net = build_backbone("vit", (3, 8, 8), 2, 8, 1, heads=2, pooling="mean", patch=4)
    assert run["params"] == count_params(net) and run["flops_per_sample"] == training_flops_per_sample(net, (3, 8, 8))
    assert "test/spurious_reliance" in run["metrics"]

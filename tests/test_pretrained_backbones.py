"""`torchvision:<name>` and `hf:<name>` backbones, built without weights or downloads (conftest sets HF_HUB_OFFLINE)."""

import json

import pytest
import torch
from fake_text import write_tiny_hf_model
from torch import nn

from testbed.errors import ConfigError
from testbed.sweep import expand, load_sweep
from testbed.training.backbones import build_backbone, count_params, training_flops_per_sample


def test_any_torchvision_classifier_becomes_a_body_and_a_new_linear_head():
    for name in ("torchvision:mobilenet_v3_small", "torchvision:resnet18", "resnet18"):
        net = build_backbone(name, (3, 32, 32), 3, 0, 0)  # weights=None: nothing is fetched
        assert isinstance(net, nn.Sequential) and isinstance(net[-1], nn.Linear) and net[-1].out_features == 3
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 3) and net[:-1](torch.zeros(2, 3, 32, 32)).ndim == 2
        assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in net.modules())


@pytest.mark.parametrize("arch, weights, message", [
    ("torchvision:resnet7", None, "arch: torchvision:resnet7 is not a torchvision classification model; list them "
                                  "with python -c 'import torchvision; print(torchvision.models.list_models("),
    ("torchvision:efficientnet_b0", "IMAGENET99", "weights: 'IMAGENET99' is not allowed; choose one of DEFAULT, "
                                                  "IMAGENET1K_V1"),
    ("torchvision:squeezenet1_0", None, "has no linear classifier"),
])
def test_unknown_torchvision_names_and_weights_fail_before_any_download(arch, weights, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build_backbone(arch, (3, 32, 32), 2, 0, 0, weights=weights)


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_hugging_face_models_build_from_a_local_configuration_and_skip_padding(tmp_path, kind):
    folder = write_tiny_hf_model(tmp_path / kind, kind)
    net = build_backbone(f"hf:{folder}", (8,), 2, 0, 0, vocab_size=27).eval()
    assert isinstance(net, nn.Sequential) and isinstance(net[-1], nn.Linear) and net[-1].in_features == 16
    x = torch.tensor([[3, 4, 5, 6, 0, 0, 0, 0]])  # 0 pads in both tokenizers (GPT-2's end-of-text is [PAD] here)
    with torch.no_grad():
        assert torch.allclose(net[:-1](x), net[:-1](x[:, :4]), atol=1e-5)
    assert count_params(net) > count_params(net[-1]) and training_flops_per_sample(net, (8,), tokens=True) > 0


def test_unknown_hugging_face_names_and_weights_fail_with_one_line(tmp_path):
    with pytest.raises(ConfigError, match="arch: no Hugging Face model hf:no-such-org/no-such-model .*huggingface.co"):
        build_backbone("hf:no-such-org/no-such-model", (8,), 2, 0, 0, vocab_size=27)
    with pytest.raises(ConfigError, match="weights: 'IMAGENET1K_V1' is not allowed for hf:gpt2; choose DEFAULT"):
        build_backbone("hf:gpt2", (8,), 2, 0, 0, weights="IMAGENET1K_V1", vocab_size=27)


def test_a_ladder_of_named_models_is_one_sweep_axis(tmp_path):
    ladder = ["hf:EleutherAI/pythia-14m", "hf:EleutherAI/pythia-70m", "hf:EleutherAI/pythia-160m"]
    sweep = {"name": "ladder", "args": {"model": "ERM"}, "axes": {"model.arch": ladder}, "seeds": [0, 1]}
    (tmp_path / "ladder.yaml").write_text(json.dumps(sweep))
    runs = expand(load_sweep(tmp_path / "ladder.yaml"))
    assert {r.axes["model.arch"] for r in runs} == set(ladder) and len(runs) == 6

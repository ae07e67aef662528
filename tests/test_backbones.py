import pytest
import torch

from testbed.training.backbones import backbone_flops, build_backbone, count_params, training_flops_per_sample


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
def test_backbones_scale_with_width(arch):
    shape = (3, 28, 28)
    small, big = (build_backbone(arch, shape, 5, w, 1) for w in (8, 16))
    assert small(torch.zeros(4, *shape)).shape == (4, 5)
    assert count_params(big) > count_params(small)
    f_small, f_big = (training_flops_per_sample(n, shape) for n in (small, big))
    assert 0 < f_small < f_big


def test_mlp_flops_match_the_closed_form():
    net = build_backbone("mlp", (1, 4, 4), 2, 8, 1)  # 16 -> 8 -> 2
    macs = 16 * 8 + 8 * 2
    # forward 2*macs; backward: input grads of the second layer (2*8*2) + weight grads of both (2*macs)
    assert training_flops_per_sample(net, (1, 4, 4)) == 2 * macs + 2 * 8 * 2 + 2 * macs


def test_torchvision_models_get_a_new_head_and_pretrained_weights_are_checked_before_any_download():
    from testbed.errors import ConfigError

    net = build_backbone("resnet18", (3, 32, 32), 3, width=1, depth=1)  # weights=None: nothing is fetched
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(ConfigError, match="weights: 'IMAGENET99' is not allowed; choose one of DEFAULT, IMAGENET1K_V1"):
        build_backbone("resnet50", (3, 32, 32), 2, 1, 1, weights="IMAGENET99")
    with pytest.raises(ConfigError, match="weights: only torchvision: and hf: models take pretrained weights"):
        build_backbone("mlp", (3, 8, 8), 2, 8, 1, weights="DEFAULT")
    with pytest.raises(ConfigError, match="takes 3-channel images"):
        build_backbone("resnet18", (2, 14, 14), 2, 1, 1)


def test_flops_counted_once_per_backbone_shape_are_those_of_each_net():
    first, second = (build_backbone("mlp", (3, 8, 8), 2, 16, 1) for _ in range(2))
    for net in (first, second):
        assert backbone_flops(net, "mlp", (3, 8, 8), 2, 16, 1) == training_flops_per_sample(net, (3, 8, 8))

"""Backbones built from a family and a scale, with their parameter count and training FLOPs.

`width` and `depth` are the scale knobs: hidden units and hidden layers for `mlp`; base channels and conv
blocks for `cnn`; base channels and BasicBlocks per stage for `resnet` (torchvision's block, stages of
width x1, x2, x4, x8 as in ResNet-18, with a 3x3 stem for small images). `resnet18` and `resnet50` are
torchvision's own models (their size is fixed; `width` and `depth` do not apply), optionally pretrained.
`random_features` is a fixed random ReLU projection to `width` features with a trained linear head (Sagawa et al.
2020b); its parameter count is the head's.
"""

import copy
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision import models
from torchvision.models.resnet import BasicBlock

from testbed.errors import ConfigError, check_choice, check_positive

Arch = Literal["mlp", "cnn", "resnet", "random_features", "resnet18", "resnet50"]
TORCHVISION = ("resnet18", "resnet50")  # torchvision's models at their own size, optionally pretrained


def mlp(input_shape: tuple[int, ...], n_classes: int, width: int, depth: int) -> nn.Module:
    dims = [int(torch.tensor(input_shape).prod())] + [width] * depth
    layers: list[nn.Module] = [nn.Flatten()]
    for d_in, d_out in zip(dims, dims[1:]):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], n_classes))


def cnn(input_shape: tuple[int, ...], n_classes: int, width: int, depth: int) -> nn.Module:
    channels, side = input_shape[0], input_shape[-1]
    layers: list[nn.Module] = []
    for i in range(depth):
        out = width * 2 ** min(i, 3)
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU()]
        if side >= 4:
            layers.append(nn.MaxPool2d(2))
            side //= 2
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n_classes))


def resnet(input_shape: tuple[int, ...], n_classes: int, width: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False),
                               nn.BatchNorm2d(width), nn.ReLU()]
    channels = width
    for stage in range(4):
        out, stride = width * 2**stage, 1 if stage == 0 else 2
        for block in range(depth):
            s = stride if block == 0 else 1
            down = None
            if s != 1 or channels != out:
                down = nn.Sequential(nn.Conv2d(channels, out, 1, stride=s, bias=False), nn.BatchNorm2d(out))
            layers.append(BasicBlock(channels, out, stride=s, downsample=down))
            channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n_classes))


class RandomReLU(nn.Module):
    """x -> ReLU(W x) with a fixed Gaussian W of shape (width, d_in), entries N(0, 1/d_in). W is a buffer, not a
    parameter: it is saved with the model but never trained, and not counted in the parameter count."""

    def __init__(self, d_in: int, width: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(width, d_in) / d_in**0.5)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x @ self.weight.T)


def random_features(input_shape: tuple[int, ...], n_classes: int, width: int, depth: int) -> nn.Module:
    """Random ReLU features of the flattened input and a trained linear head (Sagawa et al. 2020b): the model size
    is `width`, the number of features; `depth` does not apply."""
    d_in = int(torch.tensor(input_shape).prod())
    return nn.Sequential(nn.Flatten(), RandomReLU(d_in, width), nn.Linear(width, n_classes))


BUILDERS = {"mlp": mlp, "cnn": cnn, "resnet": resnet, "random_features": random_features}


def torchvision_model(name: str, input_shape: tuple[int, ...], n_classes: int, weights: str | None) -> nn.Module:
    """A torchvision classifier with a new `n_classes` head; `weights` names torchvision's pretrained weights
    (e.g. `IMAGENET1K_V1` or `DEFAULT`), fetched by torchvision on first use."""
    if input_shape[0] != 3:
        raise ConfigError(f"arch: {name} takes 3-channel images; the environment gives {input_shape[0]} channels")
    if weights is not None:
        check_choice("weights", weights, ["DEFAULT", *models.get_model_weights(name).__members__])
    net = models.get_model(name, weights=weights)
    net.fc = nn.Linear(net.fc.in_features, n_classes)
    return net


def build_backbone(arch: Arch, input_shape: tuple[int, ...], n_classes: int, width: int, depth: int,
                   weights: str | None = None) -> nn.Module:
    check_choice("arch", arch, [*BUILDERS, *TORCHVISION])
    if arch in TORCHVISION:
        return torchvision_model(arch, tuple(input_shape), n_classes, weights)
    if weights is not None:
        raise ConfigError(f"weights: only {', '.join(TORCHVISION)} take pretrained weights; arch {arch} does not")
    check_positive("width", width)
    check_positive("depth", depth)
    return BUILDERS[arch](tuple(input_shape), n_classes, width, depth)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def training_flops_per_sample(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward and backward pass per sample, counted by torch's FlopCounterMode on a copy."""
    net = copy.deepcopy(net).train()
    x = torch.zeros(2, *input_shape)
    with FlopCounterMode(display=False) as counter:
        net(x).sum().backward()
    return counter.get_total_flops() // 2


_FLOPS: dict[tuple, int] = {}


def backbone_flops(net: nn.Module, arch: Arch, input_shape: tuple[int, ...], n_classes: int, width: int,
                   depth: int) -> int:
    """`training_flops_per_sample` of `net`, built by `build_backbone` with these arguments, counted once per
    process: the count depends on them alone, and a sweep repeats each shape over seeds and baselines."""
    key = (arch, tuple(input_shape), n_classes, width, depth)
    if key not in _FLOPS:
        _FLOPS[key] = training_flops_per_sample(net, input_shape)
    return _FLOPS[key]

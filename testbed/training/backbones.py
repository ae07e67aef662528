"""Backbones built from a family and a scale, with their parameter count and training FLOPs.

`width` and `depth` are the scale knobs: hidden units and hidden layers for `mlp`; base channels and conv
blocks for `cnn`; base channels and BasicBlocks per stage for `resnet` (torchvision's block, stages of
width x1, x2, x4, x8 as in ResNet-18, with a 3x3 stem for small images). `resnet18` and `resnet50` are
torchvision's own models (their size is fixed; `width` and `depth` do not apply), optionally pretrained.

`transformer` encodes token ids (text environments) and `vit` image patches, with `width` the model dimension,
`depth` the layers, `heads` attention heads, `pooling` mean or class token and `patch` the ViT patch side
(testbed/training/transformer.py). `torchvision:<name>` is any torchvision classification model and `hf:<name>` any
Hugging Face text model (testbed/training/hf.py), both at their own size: sweeps scale them by parameter count.
`random_features` is a fixed random ReLU projection to `width` features with a trained linear head (Sagawa et al.
2020b); its parameter count is the head's.
"""

import copy
import inspect

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from torchvision import models
from torchvision.models.resnet import BasicBlock

from testbed.errors import ConfigError, check_choice, check_positive
from testbed.training.hf import hf_model
from testbed.training.transformer import PatchEncoder, Pooling, TokenEncoder

Arch = str  # a name in BUILDERS or TORCHVISION, or torchvision:<name> or hf:<name>; checked by `check_arch`
TORCHVISION = ("resnet18", "resnet50")  # short names of torchvision's models (torchvision:resnet18, ...)
TOKEN_INPUTS = ("transformer",)  # families that take token ids; `hf:` models do too
PREFIXES = ("torchvision:", "hf:")


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




def check_heads(width: int, heads: int) -> None:
    check_positive("heads", heads)
    if width % heads:
        raise ConfigError(f"heads: {heads} does not divide width {width}; each head takes width / heads dimensions")


def transformer(input_shape: tuple[int, ...], n_classes: int, width: int, depth: int, *, vocab_size: int,
                heads: int, pooling: Pooling) -> nn.Module:
    check_heads(width, heads)
    return nn.Sequential(TokenEncoder(vocab_size, input_shape[0], width, depth, heads, pooling),
                         nn.Linear(width, n_classes))


def vit(input_shape: tuple[int, ...], n_classes: int, width: int, depth: int, *, heads: int, pooling: Pooling,
        patch: int) -> nn.Module:
    check_heads(width, heads)
    check_positive("patch", patch)
    if len(input_shape) != 3 or input_shape[1] % patch or input_shape[2] % patch:
        raise ConfigError(f"patch: {patch} does not divide the environment's {input_shape[1:]} images")
    return nn.Sequential(PatchEncoder(input_shape, patch, width, depth, heads, pooling), nn.Linear(width, n_classes))


BUILDERS = {"mlp": mlp, "cnn": cnn, "resnet": resnet, "random_features": random_features, "transformer": transformer,
            "vit": vit}


def check_arch(arch: str) -> None:
    if arch in BUILDERS or arch in TORCHVISION or arch.startswith(PREFIXES):
        return
    raise ConfigError(f"arch: {arch!r} is not allowed; choose one of {', '.join([*BUILDERS, *TORCHVISION])}, "
                      "torchvision:<name> or hf:<name>")


def torchvision_model(name: str, input_shape: tuple[int, ...], n_classes: int, weights: str | None) -> nn.Module:
    """`nn.Sequential(body, head)`: a torchvision classifier whose last linear layer becomes the new `n_classes`
    head; `weights` names torchvision's pretrained weights (e.g. `IMAGENET1K_V1` or `DEFAULT`), checked against
    torchvision's registry, then fetched by torchvision on first use."""
    if name not in models.list_models(module=models):
        raise ConfigError(f"arch: torchvision:{name} is not a torchvision classification model; list them with "
                          "python -c 'import torchvision; print(torchvision.models.list_models(torchvision.models))'")
    if input_shape[0] != 3:
        raise ConfigError(f"arch: {name} takes 3-channel images; the environment gives {input_shape[0]} channels")
    if weights is not None:
        check_choice("weights", weights, ["DEFAULT", *models.get_model_weights(name).__members__])
    body = models.get_model(name, weights=weights)
    parent, attr, head = last_linear(body)
    if head is None:
        raise ConfigError(f"arch: torchvision:{name} has no linear classifier to replace")
    setattr(parent, attr, nn.Identity())
    return nn.Sequential(body, nn.Linear(head.in_features, n_classes))


def last_linear(net: nn.Module) -> tuple[nn.Module, str, nn.Linear | None]:
    """The last `nn.Linear` registered in `net` (a torchvision classifier's output layer) and its parent."""
    found: tuple[nn.Module, str, nn.Linear | None] = (net, "", None)
    for parent in net.modules():
        for attr, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found = (parent, attr, child)
    return found


def build_backbone(arch: Arch, input_shape: tuple[int, ...], n_classes: int, width: int, depth: int,
                   weights: str | None = None, **knobs: object) -> nn.Module:
    """The backbone `arch` at scale (`width`, `depth`). `knobs` are the family-specific options (`vocab_size`
    of token inputs, None for images; `heads`, `pooling`, `patch`): each builder takes those it names."""
    check_arch(arch)
    input_shape = tuple(input_shape)
    tokens = knobs.get("vocab_size") is not None
    if arch.startswith("hf:"):
        return hf_model(arch.removeprefix("hf:"), n_classes, weights, knobs.get("vocab_size"))
    if tokens != (arch in TOKEN_INPUTS):
        kind, fits = ("token ids", "transformer or hf:<name>") if tokens else ("images", "one of mlp, cnn, resnet, "
                                                                               "vit or torchvision:<name>")
        raise ConfigError(f"arch: {arch} does not take {kind}, which the environment gives; choose {fits}")
    if arch in TORCHVISION or arch.startswith("torchvision:"):
        return torchvision_model(arch.removeprefix("torchvision:"), input_shape, n_classes, weights)
    if weights is not None:
        raise ConfigError(f"weights: only torchvision: and hf: models take pretrained weights; arch {arch} does not")
    check_positive("width", width)
    check_positive("depth", depth)
    builder = BUILDERS[arch]
    wanted = inspect.signature(builder).parameters
    return builder(input_shape, n_classes, width, depth, **{k: v for k, v in knobs.items() if k in wanted})


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _cpu_attention(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def _cpu_attention_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, q, k, v)


# FlopCounterMode counts scaled_dot_product_attention's CUDA kernels but not the one it runs on a CPU (torch 2.x):
# count that one with torch's own attention formulas. (The encoder's inference fast path, which bypasses
# scaled_dot_product_attention, never runs here: FLOPs are counted in training mode, with gradients.)
ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
                   torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward}


def training_flops_per_sample(net: nn.Module, input_shape: tuple[int, ...], tokens: bool = False) -> int:
    """FLOPs of one forward and backward pass per sample, counted by torch's FlopCounterMode on a copy;
    `tokens`: the input is token ids (ones, which no model pads with), not images."""
    net = copy.deepcopy(net).train()
    x = torch.ones(2, *input_shape, dtype=torch.long) if tokens else torch.zeros(2, *input_shape)
    with FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOPS) as counter:
        net(x).sum().backward()
    return counter.get_total_flops() // 2


_FLOPS: dict[tuple, int] = {}


def backbone_flops(net: nn.Module, arch: Arch, input_shape: tuple[int, ...], n_classes: int, width: int,
                   depth: int, **knobs: object) -> int:
    """`training_flops_per_sample` of `net`, built by `build_backbone` with these arguments, counted once per
    process: the count depends on them alone, and a sweep repeats each shape over seeds and baselines."""
    key = (arch, tuple(input_shape), n_classes, width, depth, *sorted(knobs.items()))
    if key not in _FLOPS:
        _FLOPS[key] = training_flops_per_sample(net, input_shape, tokens=knobs.get("vocab_size") is not None)
    return _FLOPS[key]

"""Packed training: N MLPs of one shape (e.g. one config over seeds) trained together as one batched model.

A small MLP step on a CPU is mostly per-op overhead, not arithmetic. Stacking the N models' weights and
running each layer as one batched matmul (`torch.baddbmm`) does N models' work per op. Adam is elementwise,
so one Adam over the stacked parameters is N independent Adams: each packed model follows its sequential
run (same initial weights, data order and updates) up to float rounding. Only MLPs are packed: batched
convolutions (vmap or grouped convs) are slower than sequential ones on a CPU.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from testbed.envs.base import Batch, TensorLoader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One model to train: its network (with its initial weights), training data and data-order seed."""

    net: nn.Module
    data: Batch
    seed: int


def linears(net: nn.Module) -> list[nn.Linear] | None:
    """The Linear layers of an MLP built by `testbed.backbones.mlp` (Flatten, (Linear, ReLU)*, Linear),
    or None if `net` is not such an MLP."""
    if not isinstance(net, nn.Sequential) or not isinstance(net[0], nn.Flatten):
        return None
    layers = list(net)[1:]
    kinds = [type(m) for m in layers]
    expected = [nn.Linear, nn.ReLU] * (len(layers) // 2) + [nn.Linear]
    return [m for m in layers if isinstance(m, nn.Linear)] if kinds == expected else None


def packable(nets: list[nn.Module]) -> bool:
    """True if every net is an MLP with the same layer shapes."""
    layers = [linears(net) for net in nets]
    if any(ls is None for ls in layers):
        return False
    shapes = {tuple(tuple(m.weight.shape) for m in ls) for ls in layers}
    return len(shapes) == 1


class PackedMLP(nn.Module):
    """N MLPs of one shape as stacked weights `[N, in, out]`; input `[N, B, ...]`, output `[N, B, classes]`."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        layers = [linears(net) for net in nets]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([ls[i].weight.detach().t() for ls in layers]).contiguous())
            for i in range(len(layers[0])))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([ls[i].bias.detach()[None] for ls in layers]))
            for i in range(len(layers[0])))

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(2)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            h = h if i == last else F.relu(h)
        return h


def batches(members: list[Member], batch_size: int, epochs: int) -> Iterator[tuple[Tensor, Tensor]]:
    """The members' inputs `[N, B, ...]` and labels `[N, B]` step by step, each member's rows in the order
    `TensorLoader` gives its single run. Rows are gathered into one reused buffer: allocating a fresh
    multi-megabyte tensor per step costs page faults that outweigh a small model's step."""
    loaders = [TensorLoader(m.data, batch_size, shuffle=True, seed=m.seed) for m in members]
    x = members[0].data.x
    buffer = x.new_empty(len(members), batch_size, *x.shape[1:])
    for _ in range(epochs):
        for rows in zip(*(loader.indices() for loader in loaders)):
            xs = buffer[:, :len(rows[0])]
            for i, (m, r) in enumerate(zip(members, rows)):
                torch.index_select(m.data.x, 0, r, out=xs[i])
            yield xs, torch.stack([m.data.y[r] for m, r in zip(members, rows)])


def fit_packed(members: list[Member], lr: float, batch_size: int, epochs: int,
               weight_decay: float = 0.0) -> tuple[PackedMLP, Tensor, Tensor]:
    """Train the members' MLPs as one `PackedMLP`; returns it, the losses and the correct predictions
    `[steps, N]`."""
    model = PackedMLP([m.net for m in members])
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses, correct = [], []
    for x, y in batches(members, batch_size, epochs):
        logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # the sum's gradient for each model is that of its own mean loss
        opt.step()
        losses.append(loss.detach())
        correct.append((logits.detach().argmax(-1) == y).sum(1))
    return model, torch.stack(losses), torch.stack(correct)


@torch.no_grad()
def unpack(model: PackedMLP, nets: list[nn.Module]) -> None:
    """Copy each packed model's weights back into its own net."""
    for i, net in enumerate(nets):
        for layer, w, b in zip(linears(net), model.weights, model.biases):
            layer.weight.copy_(w[i].t())
            layer.bias.copy_(b[i, 0])


def train_sequential(member: Member, lr: float, batch_size: int, epochs: int, weight_decay: float = 0.0) -> Tensor:
    """Train one member's net in place with Adam, as a plain loop; returns its losses `[steps]`."""
    opt = torch.optim.Adam(member.net.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    loader = TensorLoader(member.data, batch_size, shuffle=True, seed=member.seed)
    for _ in range(epochs):
        for b in loader:
            loss = F.cross_entropy(member.net(b.x), b.y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
    return torch.stack(losses)


def train_many(members: list[Member], lr: float, batch_size: int, epochs: int, weight_decay: float = 0.0) -> Tensor:
    """Train every member, packed when their nets are MLPs of one shape, else one after another (with a
    log line saying why); returns the losses `[steps, N]`."""
    if packable([m.net for m in members]):
        return fit_packed(members, lr, batch_size, epochs, weight_decay)[1]
    log.info("packed training: the %d nets are not MLPs of one shape; training them sequentially", len(members))
    return torch.stack([train_sequential(m, lr, batch_size, epochs, weight_decay) for m in members], dim=1)

"""Packed training: N MLPs of one shape (one config over seeds and hyperparameter draws) trained together as one
batched model.

A small MLP step on a CPU is mostly per-op overhead, not arithmetic. Stacking the N models' weights and
running each layer as one batched matmul (`torch.baddbmm`) does N models' work per op. Adam is elementwise,
so an Adam over the stacked parameters whose learning rate and weight decay are `[N]` tensors (`PackedAdam`)
is N independent Adams, each with its own settings: each packed model follows its sequential run (same initial
weights, data order and updates) up to float rounding. What a baseline adds to ERM (its own training batch,
its own loss from the per-sample losses) comes in through a `Method` (`testbed.packed_methods`). Only MLPs
are packed: batched convolutions (vmap or grouped convs) are slower than sequential ones on a CPU.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from testbed.envs.base import Batch, TensorLoader

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One model to train: its network (with its initial weights), training data, data-order seed, optimiser
    settings, and the global RNG state its training starts from (what a sequential run's batches draw from)."""

    net: nn.Module
    data: Batch
    seed: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    rng: Tensor | None = None


class Method:
    """Plain ERM, packed: each model's batch as its data gives it and the mean of its per-sample losses.
    Subclasses (`testbed.packed_methods`) change the batch (Oracle) or the loss (GroupDRO)."""

    draws = False  # whether `batch` draws from the global RNG (then each model's RNG state is swapped in)

    def batch(self, i: int, batch: Batch) -> Batch:
        """Model i's training batch from the rows its data order gives it."""
        return batch

    def loss(self, losses: Tensor, batch: Batch) -> Tensor:
        """Each model's training loss `[N]` from its per-sample cross-entropies `[N, B]` and its batch."""
        return losses.mean(1)

    def finish(self) -> None:
        """Hand any per-model state back to the models once training ends."""


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


class PackedAdam:
    """`torch.optim.Adam` (L2 weight decay added to the gradient, as `Baseline.configure_optimizers` sets it)
    over parameters stacked along a first dimension of N models, each with its own learning rate and weight
    decay: the same float operations in the same order as torch's single-tensor Adam, with the per-model
    scalars broadcast."""

    def __init__(self, params: list[Tensor], lr: list[float], weight_decay: list[float],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.betas, self.eps, self.t = params, betas, eps, 0
        self.lr = torch.tensor(lr, dtype=torch.float64)  # step size lr / (1 - beta1^t) in double, as torch's
        self.weight_decay = torch.tensor(weight_decay, dtype=params[0].dtype, device=params[0].device)
        self.decays = any(wd != 0 for wd in weight_decay)
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.t += 1
        step_size = (self.lr / (1 - beta1 ** self.t)).to(self.params[0].dtype).to(self.params[0].device)
        bias_correction2_sqrt = (1 - beta2 ** self.t) ** 0.5
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            per_model = (-1,) + (1,) * (p.dim() - 1)
            grad = p.grad.add(p * self.weight_decay.view(per_model)) if self.decays else p.grad
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(self.eps)
            p.sub_(step_size.view(per_model) * m / denom)


def batches(members: list[Member], batch_size: int, epochs: int, method: Method) -> Iterator[Batch]:
    """The members' training batches stacked (`x` `[N, B, ...]`, `y` and `a` `[N, B]`) step by step, each
    member's rows in the order `TensorLoader` gives its single run, for `epochs` epochs. Inputs are gathered into
    one reused buffer: allocating a fresh multi-megabyte tensor per step costs page faults that outweigh a small
    model's step."""
    loaders = [TensorLoader(m.data, batch_size, shuffle=True, seed=m.seed) for m in members]
    x = members[0].data.x
    buffer = x.new_empty(len(members), batch_size, *x.shape[1:])
    plain = type(method).batch is Method.batch
    for _ in range(epochs):
        for rows in zip(*(loader.indices() for loader in loaders)):
            xs, ys, as_ = buffer[:, :len(rows[0])], [], []
            for i, (m, r) in enumerate(zip(members, rows)):
                if plain:
                    torch.index_select(m.data.x, 0, r, out=xs[i])
                    ys.append(m.data.y[r])
                    as_.append(m.data.a[r])
                    continue
                if method.draws:
                    torch.set_rng_state(m.rng)
                b = method.batch(i, Batch(*(torch.index_select(t, 0, r) for t in m.data)))
                if method.draws:
                    m.rng = torch.get_rng_state()
                xs[i].copy_(b.x)
                ys.append(b.y)
                as_.append(b.a)
            yield Batch(xs, torch.stack(ys), torch.stack(as_), None, None)


def fit_packed(members: list[Member], batch_size: int, epochs: int,
               method: Method | None = None) -> tuple[PackedMLP, Tensor, Tensor]:
    """Train the members' MLPs as one `PackedMLP`, each with its own lr and weight decay; returns it, the mean
    training losses and the correct predictions `[steps, N]`."""
    method = method or Method()
    model = PackedMLP([m.net for m in members])
    opt = PackedAdam(list(model.parameters()), [m.lr for m in members], [m.weight_decay for m in members])
    losses, correct = [], []
    for batch in batches(members, batch_size, epochs, method):
        logits = model(batch.x)
        ce = F.cross_entropy(logits.flatten(0, 1), batch.y.flatten(), reduction="none").view(batch.y.shape)
        loss = method.loss(ce, batch)
        opt.zero_grad()
        loss.sum().backward()  # the sum's gradient for each model is that of its own loss
        opt.step()
        losses.append(ce.detach().mean(1))
        correct.append((logits.detach().argmax(-1) == batch.y).sum(1))
    method.finish()
    return model, torch.stack(losses), torch.stack(correct)


@torch.no_grad()
def unpack(model: PackedMLP, nets: list[nn.Module]) -> None:
    """Copy each packed model's weights back into its own net."""
    for i, net in enumerate(nets):
        for layer, w, b in zip(linears(net), model.weights, model.biases):
            layer.weight.copy_(w[i].t())
            layer.bias.copy_(b[i, 0])


def train_sequential(member: Member, batch_size: int, epochs: int) -> Tensor:
    """Train one member's net in place with Adam, as a plain loop; returns its losses `[steps]`."""
    opt = torch.optim.Adam(member.net.parameters(), lr=member.lr, weight_decay=member.weight_decay)
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


def train_many(members: list[Member], batch_size: int, epochs: int) -> Tensor:
    """Train every member, packed when their nets are MLPs of one shape, else one after another (with a
    log line saying why); returns the losses `[steps, N]`."""
    if packable([m.net for m in members]):
        return fit_packed(members, batch_size, epochs)[1]
    log.info("packed training: the %d nets are not MLPs of one shape; training them sequentially", len(members))
    return torch.stack([train_sequential(m, batch_size, epochs) for m in members], dim=1)


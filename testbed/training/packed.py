"""Packed training: N small nets of one shape (one config over seeds and hyperparameter draws) trained together
as one batched model.

A small model's step on a CPU is mostly per-op overhead, not arithmetic. Stacking the N models' weights and
running each layer once for all of them (`torch.baddbmm` for linear layers) does N models' work per op. Conv
layers run one convolution per model on the models' channels side by side (`[B, N * C, H, W]`): on a CPU that is
faster than one grouped convolution (`groups=N`: as fast at the quickstart's width 1, 1.2x to 1.35x slower at
widths 4 to 17; benchmarks/README.md), and the layers around them still run once for all models.

Models that see the same batches (the hyperparameter draws of one seed: same data, same data order, same RNG
state) form a group: their batch is gathered once, and their first layer is one `F.linear` or `F.conv2d` over it
with the group's weights side by side. That first layer over a large input (2,352 pixels) is most of a small
model's arithmetic and memory traffic; on this project's CPU, one wide matmul did it for 2 seeds x 4 draws 6.4x
faster than a batched matmul of thin ones at width 8, and 1.2x at width 32 (benchmarks/README.md).

Adam is elementwise, so an Adam over the stacked parameters whose learning rate and weight decay are `[N]` tensors
(`PackedAdam`) is N independent Adams, each with its own settings: each packed model follows its sequential run
(same initial weights, data order and updates) up to float rounding (about 1e-7 a step, which a long run at a high
learning rate can amplify). What a baseline adds to ERM (its own training batch, its own loss from the
per-sample losses) comes in through a `Method` (`testbed.run.packed_methods`).

Each model keeps its own budget, as its sequential fit would: training stops at `epochs` or `max_steps` for all,
and a model whose `stop` rule fires at the end of an epoch (`testbed.training.budget.Plateau`) leaves the pack there,
its weights, optimiser state and per-model method state frozen, while the others go on.

Packable nets are `nn.Sequential`s of Linear, Conv2d, ReLU, Flatten, MaxPool2d and AdaptiveAvgPool2d layers (the
`mlp` and `cnn` backbones): layers with batch statistics (BatchNorm) or other structure are not packed.
"""

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from testbed.envs.base import Batch, TensorLoader

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One model to train: its network (with its initial weights), training data, data-order seed, optimiser
    settings, the global RNG state its training starts from (what a sequential run's batches draw from), and an
    optional `stop(global_step, epoch_mean_loss)` rule asked at each epoch's end. Training fills in the rest:
    per epoch the mean training loss and accuracy and the global step it ended at, the per-step mean losses, and
    the samples seen."""

    net: nn.Module
    data: Batch
    seed: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    rng: Tensor | None = None
    stop: Callable[[int, float], bool] | None = None
    curve: list[tuple[float, float]] = field(default_factory=list)
    epoch_ends: list[int] = field(default_factory=list)
    step_losses: list[Tensor] = field(default_factory=list)
    samples: int = 0

    @property
    def losses(self) -> Tensor:
        """The mean training loss of every step `[steps]`."""
        return torch.cat(self.step_losses)


class Method:
    """Plain ERM, packed: each model's batch as its data gives it and the mean of its per-sample losses.
    Subclasses (`testbed.run.packed_methods`) change the batch (Oracle) or the loss (GroupDRO)."""

    draws = False  # whether `batch` draws from the global RNG (then each model's RNG state is swapped in)

    def batch(self, i: int, batch: Batch) -> Batch:
        """Model i's training batch from the rows its data order gives it."""
        return batch

    def loss(self, losses: Tensor, batch: Batch) -> Tensor:
        """Each model's training loss `[N]` from its per-sample cross-entropies `[N, B]` and its batch."""
        return losses.mean(1)

    def retire(self, i: int) -> None:
        """Model i has finished training: hand its per-model state back to it."""

    def keep(self, index: list[int]) -> None:
        """Only the models at `index` train on: narrow the per-model state to them, in that order."""


PACKABLE = (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten, nn.MaxPool2d, nn.AdaptiveAvgPool2d)


def packable(nets: list[nn.Module]) -> bool:
    """True if every net is an `nn.Sequential` of `PACKABLE` layers, all with the same layers and shapes."""
    if not all(isinstance(net, nn.Sequential) and len(net) == len(nets[0]) for net in nets):
        return False
    for layers in zip(*nets):
        if not isinstance(layers[0], PACKABLE) or len({repr(m) for m in layers}) > 1:
            return False
        conv = layers[0]
        if isinstance(conv, nn.Conv2d) and (conv.groups != 1 or conv.padding_mode != "zeros" or conv.bias is None):
            return False
        if isinstance(conv, nn.Linear) and conv.bias is None:
            return False
    return True


class PackedNet(nn.Module):
    """N nets of one shape as one: each weight stacked along a first dimension of N models. Input `[G, B, ...]`,
    one batch per group of models that share it (`sizes`: the groups' model counts, summing to N, in model
    order); output `[N, B, classes]`. The first linear or conv layer runs once per group with the group's weights
    side by side; later linear layers run as one batched matmul, later conv layers as one convolution per model
    over its channels of the models' channels side by side (`[B, N * C, H, W]`), where ReLU and pooling act per
    channel, hence per model."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.layers = list(nets[0])  # the template: kinds and settings; weights come from `params`
        self.params = nn.ParameterList()
        for layers in zip(*nets):
            if isinstance(layers[0], nn.Linear):  # weight [N, out, in], bias [N, 1, out] for baddbmm
                self.params.append(torch.stack([m.weight.detach() for m in layers]))
                self.params.append(torch.stack([m.bias.detach()[None] for m in layers]))
            elif isinstance(layers[0], nn.Conv2d):  # weight [N, out, in, k, k], bias [N, out]
                self.params.append(torch.stack([m.weight.detach() for m in layers]))
                self.params.append(torch.stack([m.bias.detach() for m in layers]))

    def forward(self, x: Tensor, sizes: list[int] | None = None) -> Tensor:
        sizes = sizes or [1] * len(x)
        n, b = sum(sizes), x.shape[1]
        h, shared, channels = x, True, False  # shared: h is [G, B, ...]; channels: [B, N * C, H, W]; else [N, B, ...]
        params = iter(self.params)
        for layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                w, bias = next(params), next(params)
                if shared:  # each group's input through its models' filters at once: their channels side by side
                    h = torch.cat([F.conv2d(h_g, w_g.flatten(0, 1), b_g.flatten(), layer.stride, layer.padding)
                                   for h_g, w_g, b_g in zip(h, w.split(sizes), bias.split(sizes))], 1)
                else:
                    h = h if channels else h.transpose(0, 1).flatten(1, 2)
                    h = torch.cat([F.conv2d(h_i, w_i, b_i, layer.stride, layer.padding)
                                   for h_i, w_i, b_i in zip(h.chunk(n, 1), w, bias)], 1)
                shared, channels = False, True
            elif isinstance(layer, nn.Linear):
                w, bias = next(params), next(params)
                if shared:  # each group's input through one matmul with its models' weights side by side
                    h = torch.cat([F.linear(h_g, w_g.flatten(0, 1), b_g.flatten()).view(b, len(w_g), -1).transpose(0, 1)
                                   for h_g, w_g, b_g in zip(h, w.split(sizes), bias.split(sizes))])
                else:
                    h = torch.baddbmm(bias, h, w.transpose(1, 2))
                shared = False
            elif isinstance(layer, nn.Flatten):
                h, channels = (h.reshape(b, n, -1).transpose(0, 1) if channels else h.flatten(2)), False
            else:  # ReLU and pooling: elementwise or per channel
                h = layer(h)
        return h

    @torch.no_grad()
    def unpack(self, i: int, net: nn.Module) -> None:
        """Copy packed model i's weights into `net`."""
        params = iter(self.params)
        for layer in net:
            if isinstance(layer, nn.Linear):
                layer.weight.copy_(next(params)[i])
                layer.bias.copy_(next(params)[i, 0])
            elif isinstance(layer, nn.Conv2d):
                layer.weight.copy_(next(params)[i])
                layer.bias.copy_(next(params)[i])

    def keep(self, index: list[int]) -> None:
        """Keep only the models at `index`, in that order."""
        for k, p in enumerate(self.params):
            self.params[k] = nn.Parameter(p.detach()[index])


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
            denom = v.sqrt().div_(bias_correction2_sqrt).add_(self.eps)
            p.addcdiv_(m * step_size.view(per_model), denom, value=-1)  # in place: two temporaries, not four

    def keep(self, index: list[int], params: list[Tensor]) -> None:
        """Keep only the models at `index` (whose parameters are now `params`): every model has taken the same
        number of steps, so the step count stays."""
        self.params = params
        self.lr, self.weight_decay = self.lr[index], self.weight_decay[index]
        self.exp_avg = [m[index] for m in self.exp_avg]
        self.exp_avg_sq = [v[index] for v in self.exp_avg_sq]


def groups(members: list[Member], draws: bool) -> list[list[int]]:
    """The members that see the same batches, grouped (in order of first appearance): the same training data and
    data-order seed, and where the method draws from the global RNG, the same RNG state."""
    out: dict[tuple, list[int]] = {}
    for i, m in enumerate(members):
        rng = m.rng.numpy().tobytes() if draws and m.rng is not None else None
        out.setdefault((id(m.data), m.seed, rng), []).append(i)
    return list(out.values())


def epoch_batches(members: list[Member], sizes: list[int], loaders: list[TensorLoader],
                  method: Method) -> Iterator[Batch]:
    """The members' training batches of one epoch, step by step: `x` `[G, B, ...]` once per group of members
    (consecutive, `sizes` of them each) that share their batches, `y` and `a` `[N, B]` per member, each group's rows
    in the order its `TensorLoader` gives its single runs. Inputs are gathered into one reused buffer: allocating a
    fresh multi-megabyte tensor per step costs page faults that outweigh a small model's step."""
    x = members[0].data.x
    buffer = x.new_empty(len(sizes), loaders[0].batch_size, *x.shape[1:])
    firsts = [sum(sizes[:g]) for g in range(len(sizes))]
    plain = type(method).batch is Method.batch
    for rows in zip(*(loader.indices() for loader in loaders)):
        xs, ys, as_ = buffer[:, :len(rows[0])], [], []
        for g, (first, size, r) in enumerate(zip(firsts, sizes, rows)):
            m = members[first]
            if plain:
                torch.index_select(m.data.x, 0, r, out=xs[g])
                y, a = m.data.y[r], m.data.a[r]
            else:
                if method.draws:
                    torch.set_rng_state(m.rng)
                b = method.batch(first, Batch(*(torch.index_select(t, 0, r) for t in m.data)))
                if method.draws:
                    for shared in members[first:first + size]:
                        shared.rng = torch.get_rng_state()
                xs[g].copy_(b.x)
                y, a = b.y, b.a
            ys.append(y.expand(size, -1))
            as_.append(a.expand(size, -1))
        yield Batch(xs, torch.cat(ys), torch.cat(as_), None, None)


def fit_packed(members: list[Member], batch_size: int, epochs: int = -1, method: Method | None = None,
               max_steps: int = -1) -> None:
    """Train the members' nets in place as one `PackedNet`, each with its own lr and weight decay, for `epochs`
    epochs or `max_steps` steps (-1: no cap; one must be set unless every member has a `stop` rule), each member
    leaving the pack at the end of the first epoch at which its `stop` rule fires. Fills in each member's curve,
    epoch ends, step losses and samples seen."""
    if epochs < 0 and max_steps < 0 and any(m.stop is None for m in members):
        raise ValueError("fit_packed: set epochs or max_steps, or give every member a stop rule")
    method = method or Method()
    grouped = groups(members, method.draws)
    order = [i for group in grouped for i in group]  # the members of a group next to each other
    members, group_of = [members[i] for i in order], [g for g, group in enumerate(grouped) for _ in group]
    method.keep(order)
    model = PackedNet([m.net for m in members])
    opt = PackedAdam(list(model.parameters()), [m.lr for m in members], [m.weight_decay for m in members])
    firsts = [members[group_of.index(g)] for g in range(len(grouped))]
    loaders = [TensorLoader(m.data, batch_size, shuffle=True, seed=m.seed) for m in firsts]
    active, step, epoch = list(range(len(members))), 0, 0
    while active:
        live = sorted({group_of[i] for i in active})
        sizes = [sum(group_of[i] == g for i in active) for g in live]
        sums, count, losses = torch.zeros(len(active), 2), 0, []
        for batch in epoch_batches([members[i] for i in active], sizes, [loaders[g] for g in live], method):
            logits = model(batch.x, sizes)
            ce = F.cross_entropy(logits.flatten(0, 1), batch.y.flatten(), reduction="none").view(batch.y.shape)
            loss = method.loss(ce, batch)
            opt.zero_grad()
            loss.sum().backward()  # the sum's gradient for each model is that of its own loss
            opt.step()
            mean, size = ce.detach().mean(1), batch.y.shape[1]
            losses.append(mean)
            # The epoch's sums as `Baseline.tally_train` keeps them: loss x batch size, and correct predictions.
            sums += torch.stack([mean * size, (logits.detach().argmax(-1) == batch.y).sum(1).to(mean.dtype)], 1)
            count, step = count + size, step + 1
            if step == max_steps:
                break
        epoch += 1
        per_step, done = torch.stack(losses, 1), []
        for pos, (i, (loss_, acc)) in enumerate(zip(active, (sums / count).tolist())):
            m = members[i]
            m.curve.append((loss_, acc))
            m.epoch_ends.append(step)
            m.step_losses.append(per_step[pos])
            m.samples += count
            stops = m.stop is not None and m.stop(step, loss_)  # asked every epoch: the rule may keep state
            if stops or step == max_steps or epoch == epochs:
                done.append(pos)
        for pos in done:
            model.unpack(pos, members[active[pos]].net)
            method.retire(pos)
        if done:
            index = [pos for pos in range(len(active)) if pos not in done]
            active = [active[pos] for pos in index]
            if active:
                model.keep(index)
                opt.keep(index, list(model.parameters()))
                method.keep(index)


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
    """Train every member, packed when their nets are `packable`, else one after another (with a log line
    saying why); returns the losses `[steps, N]`."""
    if packable([m.net for m in members]):
        fit_packed(members, batch_size, epochs)
        return torch.stack([m.losses for m in members], dim=1)
    log.info("packed training: the %d nets are not packable (nets of one shape built from %s); training them "
             "sequentially", len(members), ", ".join(t.__name__ for t in PACKABLE))
    return torch.stack([train_sequential(m, batch_size, epochs) for m in members], dim=1)

"""`testbed show`: look at an environment's data before training on it.

A panel per sub-environment holds a few of its samples (`--n`), picked in turn from each (y, a) group so that
samples whose attribute agrees with the label and samples whose attribute contradicts it both appear, each with
its `y` and `a` and beside it its counterfactuals: the same sample under do(a = another value) and under
do(causal = another class), as far as the environment can render them. Images are drawn; vectors and token
sequences are written out as text (in the PNG, and on stdout). Sub-environments without fixed data (the braking
task's closed loop) show the states that the configured model, untrained or loaded with `--ckpt`, visits.
"""

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

from testbed.envs.base import Batch, ShiftedEnv  # noqa: E402
from testbed.errors import ConfigError, check_positive  # noqa: E402
from testbed.training.module import Baseline  # noqa: E402

TOKENS = 24  # a token sequence is cut after this many tokens
VALUES = 8  # a vector after this many values


def pick(env: ShiftedEnv, data: Batch, n: int) -> Tensor:
    """Up to `n` sample indices, taken in turn from each (y, a) group present, first samples first: the groups
    whose attribute agrees with the label come first, then those where it is off by one, and so on."""
    groups = env.group(data)
    present = sorted(torch.unique(groups).tolist(), key=lambda g: ((g % env.n_attr - g // env.n_attr) % env.n_attr, g))
    queues = [(groups == g).nonzero().squeeze(1).tolist() for g in present]
    picked: list[int] = []
    while len(picked) < min(n, len(groups)):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return torch.tensor(picked, dtype=torch.long)


def counterfactuals(env: ShiftedEnv, batch: Batch) -> list[tuple[str, Tensor, list[str]]]:
    """(heading, inputs, per-sample value) of each intervention the environment renders: the next value of `a`,
    and the next causal class."""
    out = []
    if "a" in env.interventions:
        a = (batch.a + 1) % env.n_attr
        out.append(("do(a)", env.intervene(batch, a=a), [f"a={v}" for v in a.tolist()]))
    if "causal" in env.interventions:
        c = (env.causal(batch) + 1) % env.n_classes
        out.append(("do(causal)", env.intervene(batch, causal=c), [f"causal={v}" for v in c.tolist()]))
    return out


def as_rgb(x: Tensor) -> np.ndarray:
    """`[C, H, W]` as an RGB array in [0, 1]: 3 channels as they are, 2 (red, green) with an empty blue one, any
    other number averaged to gray. uint8 images are scaled by 1/255."""
    x = x.detach().cpu().float() / (255.0 if x.dtype == torch.uint8 else 1.0)
    if x.shape[0] == 2:
        x = torch.cat([x, torch.zeros_like(x[:1])])
    elif x.shape[0] != 3:
        x = x.mean(0, keepdim=True).expand(3, -1, -1)
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def as_text(x: Tensor) -> str:
    """A vector with two decimals, or a token sequence as its ids."""
    if not x.dtype.is_floating_point:
        ids = x.tolist()
        return " ".join(map(str, ids[:TOKENS])) + (" ..." if len(ids) > TOKENS else "")
    values = x.tolist()
    return "[" + ", ".join(f"{v:.2f}" for v in values[:VALUES]) + (", ...]" if len(values) > VALUES else "]")


def labels(env: ShiftedEnv, batch: Batch) -> list[str]:
    """`y=1 a=0`, and the causal class where the environment has one (it differs from y under label noise)."""
    causal = env.causal(batch).tolist() if "causal" in env.interventions else None
    return [f"y={y} a={a}" + ("" if causal is None else f" causal={causal[i]}")
            for i, (y, a) in enumerate(zip(batch.y.tolist(), batch.a.tolist()))]


def image_panel(ax: plt.Axes, batch: Batch, names: list[str], views: list[tuple[str, Tensor, list[str]]]) -> None:
    """A mosaic: a row per sample, the sample then each counterfactual; labels beside and above the tiles."""
    columns = [("sample", batch.x, names), *views]
    h, w = batch.x.shape[-2:]
    pad = max(1, h // 8)
    mosaic = np.ones((len(batch.y) * (h + pad) - pad, len(columns) * (w + pad) - pad, 3))
    for j, (_, x, _) in enumerate(columns):
        for i in range(len(batch.y)):
            mosaic[i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = as_rgb(x[i])
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([j * (w + pad) + w / 2 for j in range(len(columns))], [head for head, _, _ in columns])
    ax.xaxis.tick_top()
    ax.set_yticks([i * (h + pad) + h / 2 for i in range(len(batch.y))], columns[0][2])
    for j, (_, _, values) in enumerate(columns[1:], start=1):  # the value each counterfactual set, under its tile
        for i, v in enumerate(values):
            ax.text(j * (w + pad) + w / 2, i * (h + pad) + h - 0.5, v, ha="center", va="bottom", fontsize=6,
                    color="white", bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "linewidth": 0})
    ax.tick_params(length=0, labelsize=7)
    for spine in ax.spines.values():
        spine.set_visible(False)


def text_rows(batch: Batch, names: list[str], views: list[tuple[str, Tensor, list[str]]]) -> list[str]:
    head = ["sample", "x"] + [f"{h}: value, x" for h, _, _ in views]
    rows = [[names[i], as_text(x)] + [f"{vals[i]}, {as_text(cx[i])}" for _, cx, vals in views]
            for i, x in enumerate(batch.x)]
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
    return ["  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip() for r in [head, *rows]]


def samples(env: ShiftedEnv, model: Baseline, n: int, policy: str) -> dict[str, tuple[str, Batch]]:
    """Per sub-environment: a caption and the picked samples; `policy` says which model visits closed-loop states."""
    env.setup("test")
    out = {}
    for spec in env.specs:
        fixed = spec.name in env.data
        data = env.data[spec.name] if fixed else env.eval_data(spec.name, model)
        caption = f"{spec.name} ({spec.role})" + ("" if fixed else f": the states {policy} visits")
        out[spec.name] = (caption, Batch(*(t[pick(env, data, n)] for t in data)))
    return out


def draw(env: ShiftedEnv, model: Baseline, n: int, policy: str = "the untrained model") -> tuple[Figure, list[str]]:
    """The figure (a panel per sub-environment) and, for non-image inputs, its text."""
    shown = samples(env, model, n, policy)
    image = len(env.input_shape) == 3
    cols = min(len(shown), 3 if image else 1)
    rows = math.ceil(len(shown) / cols)
    views_n = 1 + len(env.interventions)
    if image:  # about 0.8 inch per tile, room for the row labels and the headings
        size = ((0.8 * views_n + 1.4) * cols, (0.8 * n + 0.7) * rows + 0.4)
    else:
        size = (3.2 * views_n + 2.5, (0.15 * (n + 1) + 0.45) * rows + 0.4)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    text = []
    for ax, (caption, batch) in zip(axes.flat, shown.values()):
        views, names = counterfactuals(env, batch), labels(env, batch)
        ax.set_title(caption, fontsize=9, loc="left")
        if image:
            image_panel(ax, batch, names, views)
        else:
            lines = text_rows(batch, names, views)
            text += [caption, *lines, ""]
            ax.text(0, 1, "\n".join(lines), family="monospace", fontsize=7, va="top", transform=ax.transAxes)
            ax.axis("off")
    for ax in axes.flat[len(shown):]:
        fig.delaxes(ax)
    fig.suptitle(f"{type(env).__name__}: samples of each sub-environment and their counterfactuals", fontsize=10)
    fig.tight_layout()
    return fig, text


def show(argv: list[str]) -> None:
    """`testbed show [--n N] [--out PNG] [--ckpt CKPT] ENVIRONMENT OPTIONS`: the environment is given as to `fit`
    (`-c configs/envs/confounded.yaml`, `--data SpuriousShapes --data.n_classes 3`)."""
    from testbed.run.config import resolver

    p = argparse.ArgumentParser(prog="testbed show", add_help=False)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("samples.png"))
    p.add_argument("--ckpt", default=None)
    own, rest = p.parse_known_args(argv)
    if not rest or "-h" in rest or "--help" in rest:
        print(show.__doc__.split("\n\n")[0] if show.__doc__ else "", __doc__, sep="\n\n")
        return
    check_positive("n", own.n)
    parser = resolver()
    init = parser.instantiate_classes(parser.parse_args(["--model=ERM", *rest]))
    env, model = init.data, init.model
    if own.ckpt is not None:
        model.load_weights(own.ckpt, "ckpt")
    if own.out.suffix.lower() != ".png":
        raise ConfigError(f"out: {str(own.out)!r} is not allowed; give a .png file")
    fig, text = draw(env, model, own.n, "the untrained model" if own.ckpt is None else f"the model of {own.ckpt}")
    own.out.parent.mkdir(parents=True, exist_ok=True)
    panels = "; ".join(ax.get_title(loc="left") for ax in fig.axes)
    fig.savefig(own.out, dpi=150, metadata={"Title": f"testbed show: {type(env).__name__}", "Description": panels})
    plt.close(fig)
    if text:
        print("\n".join(text))
    print(f"figure: {own.out}")

"""On a GPU: N small nets of one config (packed.py's: 4 learning-rate draws for each seed) trained one after another
in plain loops vs together as one packed model (`testbed.training.packed`), each in float32 and under bf16
autocast, and the plain loop with each net `torch.compile`d, for MLPs (widths 8, 32, 128) and the quickstart's CNN
(widths 1, 4, 17). Every round starts from the same initial weights (restored in place, so compiled nets keep their
graphs); the first, untimed round holds the compilation. Each variant's losses are compared with the float32 plain
loop's (max |diff|: bf16 rounds, so it is reported, not asserted). On a machine without CUDA it says so and exits.

    .venv/bin/python benchmarks/gpu.py [--n 16] [--repeats 5] [--archs mlp,cnn] [--compile 1]
"""

import contextlib
import sys
from collections.abc import Callable

import torch
from common import bench_args, interleaved, report, timed
from packed import BATCH, EPOCHS, WIDTHS, members, synced
from torch import Tensor

from testbed.training.packed import Member, fit_packed, train_sequential


def autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def variants(ms: list[Member], compiled: bool) -> dict[str, Callable[[], Tensor]]:
    """Each variant trains the members from their initial weights and returns the losses `[steps, N]`."""
    initial = [{k: v.clone() for k, v in m.net.state_dict().items()} for m in ms]

    def reset() -> list[Member]:
        for m, state in zip(ms, initial):
            m.net.load_state_dict(state)
        return [Member(m.net, m.data, m.seed, m.lr) for m in ms]

    def plain(bf16: bool, nets: list[torch.nn.Module] | None = None) -> Tensor:
        fresh = reset()
        if nets is not None:
            fresh = [Member(net, m.data, m.seed, m.lr) for net, m in zip(nets, fresh)]
        with autocast(bf16):
            return torch.stack([train_sequential(m, BATCH, EPOCHS) for m in fresh], dim=1)

    def packed(bf16: bool) -> Tensor:
        fresh = reset()
        with autocast(bf16):
            fit_packed(fresh, BATCH, EPOCHS)
        return torch.stack([m.losses for m in fresh], dim=1)

    out = {"plain loops, float32": lambda: plain(False), "plain loops, bf16 autocast": lambda: plain(True),
           "packed, float32": lambda: packed(False), "packed, bf16 autocast": lambda: packed(True)}
    if compiled:
        nets = [torch.compile(m.net) for m in ms]  # shares the parameters of m.net: reset() restores both
        out["plain loops, torch.compile"] = lambda: plain(False, nets)
    return out


def main() -> None:
    args = bench_args(__doc__, repeats=5, n=16, archs="mlp,cnn", compile=1)
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device is visible (torch.cuda.is_available() is False); nothing to time. "
              "Run it on a machine with an NVIDIA GPU and a CUDA build of torch.")
        sys.exit(0)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, {args.n} runs per point, batch {BATCH}, "
          f"{EPOCHS} epochs, {args.repeats} rounds after one untimed round")
    for arch in args.archs.split(","):
        for width in WIDTHS[arch]:
            ms = members(args.n, arch, width, "cuda")
            runs = variants(ms, bool(args.compile))
            reference = runs["plain loops, float32"]()
            diffs = {name: (run() - reference).abs().max().item() for name, run in runs.items()}
            times = interleaved({name: (lambda run=run: timed(synced(run))) for name, run in runs.items()},
                                repeats=args.repeats)
            print(f"{arch} width {width}: max |loss - float32 plain loop's|: "
                  + ", ".join(f"{name} {d:.1e}" for name, d in diffs.items()) + "; per round of N runs:")
            report(times)


if __name__ == "__main__":
    main()

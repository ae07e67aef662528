"""Arithmetic efficiency: FLOP/s achieved by a training step of the largest quickstart model (MLP, width 512,
one hidden layer, batch 256, Adam), as a fraction of the FLOP/s of a large float32 matmul measured in the
same run (the machine's practical peak). FLOPs per step are those testbed reports (FlopCounterMode).

    .venv/bin/python benchmarks/arithmetic.py [--repeats 7] [--threads 2]
"""

import statistics

import torch
import torch.nn.functional as F
from common import bench_args, interleaved, timed

from testbed.training.backbones import build_backbone, training_flops_per_sample

BATCH, STEPS, SIDE = 256, 20, 2048


def main() -> None:
    args = bench_args(__doc__, repeats=7)
    net = build_backbone("mlp", (3, 28, 28), 2, 512, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.rand(BATCH, 3, 28, 28), torch.randint(2, (BATCH,))
    a, b = torch.randn(SIDE, SIDE), torch.randn(SIDE, SIDE)

    def steps() -> None:
        for _ in range(STEPS):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    times = interleaved({"matmul": lambda: timed(lambda: torch.mm(a, b)), "train": lambda: timed(steps)},
                        repeats=args.repeats)
    peak = [2 * SIDE**3 / t for t in times["matmul"]]
    flops = training_flops_per_sample(net, (3, 28, 28)) * BATCH * STEPS
    achieved = [flops / t for t in times["train"]]
    print(f"arithmetic efficiency, {args.threads} threads, {args.repeats} interleaved rounds")
    print(f"  matmul peak ({SIDE}^3 float32)        median {statistics.median(peak) / 1e9:7.1f} GFLOP/s"
          f"   best {max(peak) / 1e9:7.1f} GFLOP/s")
    print(f"  width-512 MLP training step        median {statistics.median(achieved) / 1e9:7.1f} GFLOP/s"
          f"   best {max(achieved) / 1e9:7.1f} GFLOP/s   ({flops / STEPS / 1e9:.2f} GFLOP per step)")
    print(f"  fraction of peak                   median {statistics.median(achieved) / statistics.median(peak):6.2f}"
          f"        best/best {max(achieved) / max(peak):6.2f}")


if __name__ == "__main__":
    main()

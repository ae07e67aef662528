"""Packed training: N small MLPs of one config (N seeds: own initial weights, data and data order) trained
together as one batched model (`testbed.packed`), vs the same N runs one after another in a plain loop.
Each packed model's losses are checked against its sequential run (max |diff| <= 1e-5). Then the same through
`testbed sweep`: N seeds of one ERM run, packed (the default) vs `pack: false`, whole sweeps in one process.

    .venv/bin/python benchmarks/packed.py [--n 8] [--repeats 5] [--threads 2]
"""

import copy
import json
import logging
import tempfile
from pathlib import Path

import torch
from common import bench_args, interleaved, report, timed

from testbed.backbones import build_backbone
from testbed.envs import SpuriousShapes
from testbed.executors import run_sweep
from testbed.packed import Member, fit_packed, train_sequential

BATCH, EPOCHS, N_TRAIN, LR = 256, 2, 2048, 1e-3
SWEEP_N_TRAIN, SWEEP_EPOCHS = 8192, 4  # 128 steps a run: enough training for packing to show beside the fixed cost


def members(n: int, width: int) -> list[Member]:
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        env = SpuriousShapes(n_train=N_TRAIN, n_val=BATCH, n_test=BATCH, seed=seed)
        env.setup()
        out.append(Member(build_backbone("mlp", env.input_shape, env.n_classes, width, 1), env.train_data, seed))
    return out


def fresh(ms: list[Member]) -> list[Member]:
    """Copies with untrained nets: every timed round starts from the same initial weights."""
    return [Member(copy.deepcopy(m.net), m.data, m.seed) for m in ms]


def bench(ms: list[Member], width: int, repeats: int) -> None:
    _, packed, _ = fit_packed(fresh(ms), LR, BATCH, EPOCHS)
    sequential = torch.stack([train_sequential(m, LR, BATCH, EPOCHS) for m in fresh(ms)], dim=1)
    diff = (packed - sequential).abs().max().item()
    assert diff <= 1e-5, f"packed losses differ from sequential ones by {diff}"
    times = interleaved({
        "sequential (N plain loops)": lambda: timed(lambda: [train_sequential(m, LR, BATCH, EPOCHS)
                                                             for m in fresh(ms)]),
        "packed (one batched model)": lambda: timed(lambda: fit_packed(fresh(ms), LR, BATCH, EPOCHS))}, repeats=repeats)
    print(f"width {width}: losses match (max |diff| {diff:.1e} over {len(packed)} steps x {len(ms)} models);"
          " speed-up = 1 / ratio:")
    report(times)


def bench_sweep(n: int, width: int, repeats: int) -> None:
    """Whole sweeps (resolve, build, train, test, write) of n seeds, packed vs one run at a time."""
    sweep = {"name": "s", "seeds": list(range(n)),
             "args": {"model": "ERM", "data": "SpuriousShapes", "model.width": width, "model.depth": 1,
                      "data.n_train": SWEEP_N_TRAIN, "data.batch_size": BATCH, "trainer.max_epochs": SWEEP_EPOCHS,
                      "trainer.limit_val_batches": 0, "trainer.enable_checkpointing": False}}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for pack in (True, False):
            files[pack] = Path(tmp) / f"{pack}.yaml"
            files[pack].write_text(json.dumps({**sweep, "pack": pack}))
        rounds = iter(range(10**6))
        go = lambda pack: timed(lambda: run_sweep(files[pack], Path(tmp) / str(next(rounds))))  # noqa: E731
        times = interleaved({"one run at a time": lambda: go(False), "packed": lambda: go(True)}, repeats=repeats)
    print(f"sweep of {n} seeds, ERM width {width}, n_train {SWEEP_N_TRAIN}, {SWEEP_EPOCHS} epochs: "
          "speed-up = 1 / ratio:")
    report(times)


def main() -> None:
    args = bench_args(__doc__, repeats=5, n=8)
    print(f"packed training: {args.n} seeds x MLP (1 hidden layer), n_train {N_TRAIN}, batch {BATCH}, "
          f"{EPOCHS} epochs, {args.threads} threads, {args.repeats} interleaved rounds")
    for width in (8, 32, 128):
        bench(members(args.n, width), width, args.repeats)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    for width in (8, 32):
        bench_sweep(args.n, width, args.repeats)


if __name__ == "__main__":
    main()

"""Packed training: N small MLPs of one config (own seeds, initial weights, data, data order and learning
rates) trained together as one batched model (`testbed.packed`), vs the same N runs one after another in a
plain loop. Each packed model's losses are checked against its sequential run (max |diff| <= 1e-5). Then the
same through `testbed sweep`: 16 runs (4 learning-rate draws x 4 seeds) of ERM and of Oracle at each width,
packed (the default) vs `pack: false`, whole sweeps in one process, side by side.

    .venv/bin/python benchmarks/packed.py [--n 8] [--repeats 5] [--threads 2] [--clock cpu] [--loops 0] [--sweeps 0]
"""

import contextlib
import copy
import io
import json
import logging
import tempfile
from pathlib import Path

import torch
from common import bench_args, interleaved, report, timed

from testbed.backbones import build_backbone
from testbed.envs import SpuriousShapes
from testbed.packed import Member, fit_packed, train_sequential
from testbed.sweep.executors import run_sweep

BATCH, EPOCHS, N_TRAIN = 256, 2, 2048
SWEEP_N_TRAIN, SWEEP_EPOCHS = 4096, 4  # 64 steps a run: a small quickstart run


def members(n: int, width: int) -> list[Member]:
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        env = SpuriousShapes(n_train=N_TRAIN, n_val=BATCH, n_test=BATCH, seed=seed)
        env.setup()
        net = build_backbone("mlp", env.input_shape, env.n_classes, width, 1)
        out.append(Member(net, env.train_data, seed, lr=10 ** (-2 - seed % 4 / 2)))
    return out


def fresh(ms: list[Member]) -> list[Member]:
    """Copies with untrained nets: every timed round starts from the same initial weights."""
    return [Member(copy.deepcopy(m.net), m.data, m.seed, m.lr) for m in ms]


def bench(ms: list[Member], width: int, repeats: int) -> None:
    _, packed, _ = fit_packed(fresh(ms), BATCH, EPOCHS)
    sequential = torch.stack([train_sequential(m, BATCH, EPOCHS) for m in fresh(ms)], dim=1)
    diff = (packed - sequential).abs().max().item()
    assert diff <= 1e-5, f"packed losses differ from sequential ones by {diff}"
    times = interleaved({
        "sequential (N plain loops)": lambda: timed(lambda: [train_sequential(m, BATCH, EPOCHS)
                                                             for m in fresh(ms)]),
        "packed (one batched model)": lambda: timed(lambda: fit_packed(fresh(ms), BATCH, EPOCHS))}, repeats=repeats)
    print(f"width {width}: losses match (max |diff| {diff:.1e} over {len(packed)} steps x {len(ms)} models);"
          " speed-up = 1 / ratio:")
    report(times)


def bench_sweep(model: str, width: int, repeats: int) -> None:
    """Whole sweeps (resolve, build, train, test, write) of 4 lr draws x 4 seeds, packed vs one run at a time."""
    sweep = {"name": "s", "seeds": [0, 1, 2, 3], "hparams": {"model.lr": {"low": 1e-4, "high": 1e-2, "log": True}},
             "draws": 4,
             "args": {"model": model, "data": "SpuriousShapes", "model.width": width, "model.depth": 1,
                      "data.n_train": SWEEP_N_TRAIN, "data.batch_size": BATCH, "trainer.max_epochs": SWEEP_EPOCHS,
                      "trainer.limit_val_batches": 0, "trainer.enable_checkpointing": False}}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for pack in (True, False):
            files[pack] = Path(tmp) / f"{pack}.yaml"
            files[pack].write_text(json.dumps({**sweep, "pack": pack}))
        rounds = iter(range(10**6))
        go = lambda pack: timed(lambda: run_sweep(files[pack], Path(tmp) / str(next(rounds))))  # noqa: E731
        with contextlib.redirect_stdout(io.StringIO()):
            times = interleaved({"one run at a time": lambda: go(False), "packed": lambda: go(True)}, repeats=repeats)
    print(f"sweep of 16 runs (4 lr draws x 4 seeds), {model} width {width}, n_train {SWEEP_N_TRAIN}, "
          f"{SWEEP_EPOCHS} epochs: speed-up = 1 / ratio:")
    report(times)


def main() -> None:
    args = bench_args(__doc__, repeats=5, n=8, loops=1, sweeps=1)
    print(f"packed training: {args.n} seeds x lr x MLP (1 hidden layer), n_train {N_TRAIN}, batch {BATCH}, "
          f"{EPOCHS} epochs, {args.threads} threads, {args.repeats} interleaved rounds")
    for width in (8, 32, 128) if args.loops else ():
        bench(members(args.n, width), width, args.repeats)
    if not args.sweeps:
        return
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    for width in (8, 32, 128):
        for model in ("ERM", "Oracle"):
            bench_sweep(model, width, args.repeats)


if __name__ == "__main__":
    main()

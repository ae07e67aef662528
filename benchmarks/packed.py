"""Packed training: N small nets of one config (4 learning-rate draws for each seed; the draws of one seed share
its data, data order and initial weights, as in a sweep) trained together as one batched model
(`testbed.training.packed`), vs the same N runs one after another in a plain loop, for MLPs (widths 8, 32, 128)
and the quickstart's CNN (widths 1, 4, 17 on 12-pixel images). Each packed model's losses are checked against its
sequential run (max |diff| <= 1e-5). Then the same through `testbed sweep`: 16 runs (4 learning-rate draws x 4 seeds) of
ERM and of Oracle at each width, packed (the default) vs `pack: false`, whole sweeps in one process, side by side, at
`--epochs` of 16 steps. `--device cuda` runs the loops on a GPU (sweeps pack only on the CPU).

    .venv/bin/python benchmarks/packed.py [--n 16] [--repeats 5] [--threads 2] [--clock cpu] [--loops 0] [--sweeps 0]
        [--archs mlp,cnn] [--device cpu] [--epochs 4,16]
"""

import contextlib
import copy
import io
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from common import bench_args, interleaved, report, timed
from torch import Tensor

import testbed.sweep.executors
from testbed.envs import SpuriousShapes
from testbed.sweep.executors import run_sweep
from testbed.training.backbones import build_backbone
from testbed.training.packed import Member, fit_packed, train_sequential

BATCH, EPOCHS, N_TRAIN = 256, 2, 2048
DRAWS = 4  # learning-rate draws per seed, as in the sweeps below
SWEEP_N_TRAIN = 4096  # 16 steps an epoch; runs are tested on the quickstart's 250 + 500 samples, no probe
WIDTHS = {"mlp": (8, 32, 128), "cnn": (1, 4, 17)}  # the CNN's: the quickstart's
SHAPES = {"mlp": {"depth": 1}, "cnn": {"depth": 2, "image_size": 12}}  # the CNN's: the quickstart's


def members(n: int, arch: str, width: int, device: str) -> list[Member]:
    """`n` runs as a sweep has them: `DRAWS` learning rates for each of `n / DRAWS` seeds; the draws of one seed
    share its data, data order and initial weights, so packed training gathers their batch and runs their first
    layer once."""
    out = []
    for seed in range(max(1, n // DRAWS)):
        env = SpuriousShapes(n_train=N_TRAIN, n_val=BATCH, n_test=BATCH, seed=seed,
                             **{k: v for k, v in SHAPES[arch].items() if k != "depth"})
        env.setup()
        data = type(env.train_data)(*(t.to(device) if t is not None else t for t in env.train_data))
        for draw in range(DRAWS):
            torch.manual_seed(seed)
            net = build_backbone(arch, env.input_shape, env.n_classes, width, SHAPES[arch]["depth"]).to(device)
            out.append(Member(net, data, seed, lr=10 ** (-2 - draw / 2)))
    return out


def fresh(ms: list[Member]) -> list[Member]:
    """Copies with untrained nets: every timed round starts from the same initial weights."""
    return [Member(copy.deepcopy(m.net), m.data, m.seed, m.lr) for m in ms]


def packed_losses(ms: list[Member]) -> Tensor:
    fit_packed(ms, BATCH, EPOCHS)
    return torch.stack([m.losses for m in ms], dim=1)


def synced(fn: Callable[[], object]) -> Callable[[], object]:
    """`fn`, then wait for the GPU's queued work, so that the clock sees it."""
    def run() -> None:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    return run


def bench(ms: list[Member], label: str, repeats: int) -> None:
    packed = packed_losses(fresh(ms))
    sequential = torch.stack([train_sequential(m, BATCH, EPOCHS) for m in fresh(ms)], dim=1)
    diff = (packed - sequential).abs().max().item()
    assert diff <= 1e-5, f"packed losses differ from sequential ones by {diff}"
    times = interleaved({
        "sequential (N plain loops)": lambda: timed(synced(lambda: [train_sequential(m, BATCH, EPOCHS)
                                                                    for m in fresh(ms)])),
        "packed (one batched model)": lambda: timed(synced(lambda: packed_losses(fresh(ms))))}, repeats=repeats)
    print(f"{label}: losses match (max |diff| {diff:.1e} over {len(packed)} steps x {len(ms)} models);"
          " speed-up = 1 / ratio:")
    report(times)


def bench_sweep(model: str, arch: str, width: int, epochs: int, repeats: int) -> None:
    """Whole sweeps (resolve, build, train, test, write) of 4 lr draws x 4 seeds, packed vs one run at a time."""
    shape = {f"{'model' if k == 'depth' else 'data'}.{k}": v for k, v in SHAPES[arch].items()}
    sweep = {"name": "s", "seeds": [0, 1, 2, 3], "hparams": {"model.lr": {"low": 1e-4, "high": 1e-2, "log": True}},
             "draws": 4,
             "args": {"model": model, "data": "SpuriousShapes", "model.arch": arch, "model.width": width, **shape,
                      "data.n_train": SWEEP_N_TRAIN, "data.n_val": 250, "data.n_test": 500, "model.probe": False,
                      "data.batch_size": BATCH, "trainer.max_epochs": epochs,
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
    print(f"sweep of 16 runs (4 lr draws x 4 seeds), {model} {arch} width {width}, n_train {SWEEP_N_TRAIN}, "
          f"{epochs} epochs ({epochs * SWEEP_N_TRAIN // BATCH} steps a run): speed-up = 1 / ratio:")
    report(times)


def main() -> None:
    args = bench_args(__doc__, repeats=5, n=16, loops=1, sweeps=1, archs="mlp,cnn", device="cpu",
                      epochs="4")
    archs = args.archs.split(",")
    print(f"packed training: {args.n} runs ({DRAWS} lr draws x {max(1, args.n // DRAWS)} seeds), n_train {N_TRAIN}, "
          f"batch {BATCH}, {EPOCHS} epochs, {args.threads} threads, {args.repeats} rounds, on {args.device}")
    for arch in archs if args.loops else ():
        for width in WIDTHS[arch]:
            bench(members(args.n, arch, width, args.device), f"{arch} width {width}", args.repeats)
    if not args.sweeps or args.device != "cpu":
        return
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    # A one-worker sweep sets torch's threads to every core; keep the count pinned above, for both variants.
    testbed.sweep.executors._quiet_worker = lambda threads: None
    for arch in archs:
        for width in WIDTHS[arch]:
            for model in ("ERM", "Oracle"):
                for epochs in map(int, args.epochs.split(",")):
                    bench_sweep(model, arch, width, epochs, args.repeats)


if __name__ == "__main__":
    main()

"""Sweep overhead: small runs through the sweep's run path (`testbed.sweep.job.execute`: parse, build,
fit, test, write the run folder) vs the same runs in a hand-written loop (generate the data, train, score
the test stage with the same tallies, write the metrics). Both give the same test metrics (checked).
The difference on the tiny runs is the fixed cost per run: parsing, set-up, evaluation plumbing, writes.

    .venv/bin/python benchmarks/sweep_overhead.py [--repeats 5] [--threads 2]
"""

import json
import logging
import statistics
import tempfile
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from common import bench_args, interleaved, timed

from testbed.envs.base import ShiftedEnv, TensorLoader
from testbed.run.config import resolver
from testbed.sweep import Run, expand, load_sweep
from testbed.sweep.job import execute
from testbed.sweep.resolve import identify
from testbed.training.backbones import build_backbone
from testbed.training.metrics import summarize, tally, tally_size

ROOT = Path(__file__).resolve().parents[1]
# Tiny and large runs of the shape the quickstart had when this benchmark was written (an MLP on the confounded
# preset, 500 samples, a fixed number of epochs): the fixed cost per run shows on the tiny ones.
SWEEP = {"name": "overhead", "configs": [str(ROOT / "configs/envs/confounded.yaml")], "seeds": [0],
         "axes": {"model": ["ERM", "Oracle"], "model.width": [8, 512]},
         "args": {"model.arch": "mlp", "data.n_train": 500, "data.n_val": 250, "data.n_test": 500,
                  "trainer.max_epochs": 3, "trainer.limit_val_batches": 0, "trainer.enable_checkpointing": False,
                  "model.probe": False}}  # the hand-written loop fits no probe


def small_runs(tmp: Path) -> list[Run]:
    (tmp / "sweep.yaml").write_text(json.dumps(SWEEP))
    runs = expand(load_sweep(tmp / "sweep.yaml"))
    identify(runs)
    return runs


def evaluate(net: torch.nn.Module, env: ShiftedEnv) -> dict[str, float]:
    """The test stage of `Baseline` written out: per-group tallies with do(a) and do(causal) flips."""
    gen = torch.Generator().manual_seed(0)
    other = lambda v, k: (v + torch.randint(1, k, v.shape, generator=gen)) % k  # noqa: E731
    n_groups = env.n_classes * env.n_attr
    tallies = {}
    with torch.inference_mode():
        for name in env.eval_names("test"):
            t = torch.zeros(tally_size(n_groups), dtype=torch.double)
            for b in TensorLoader(env.data[name], env.eval_batch_size):
                probs = net(b.x).softmax(1)
                pred_a = net(env.intervene(b, a=other(b.a, env.n_attr))).argmax(1)
                pred_c = net(env.intervene(b, causal=other(env.causal(b), env.n_classes))).argmax(1)
                t += tally(probs, b.y, b.y * env.n_attr + b.a, n_groups, pred_a, pred_c)
            tallies[name] = t
    return summarize("test", tallies, {s.name: s.role for s in env.specs}, env.interventions)


def hand_run(run: Run, out: Path) -> tuple[float, dict]:
    """Seconds of the run as a plain loop (network, data generation, training, test, one JSON write), and its
    metrics. Only the config is read outside the timed section."""
    parser = resolver()
    config = parser.parse_args(run.argv)
    init = parser.instantiate_classes(config)
    model, env, epochs = init.model, init.data, config.trainer.max_epochs
    hp = config.model.init_args
    metrics: dict = {}

    def work() -> None:
        L.seed_everything(run.seed, verbose=False)
        net = build_backbone(hp.arch, env.input_shape, env.n_classes, hp.width, hp.depth)  # the run's initial weights
        env.setup()
        opt = torch.optim.Adam(net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        loader = TensorLoader(env.train_data, env.batch_size, shuffle=True, seed=env.seed)
        for _ in range(epochs):
            for b in loader:
                if type(model).__name__ == "Oracle":
                    a = torch.randint(env.n_attr, b.a.shape)
                    b = b._replace(x=env.intervene(b, a=a), a=a)
                loss = F.cross_entropy(net(b.x), b.y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        metrics.update(evaluate(net, env))
        (out / f"{run.id}.json").write_text(json.dumps(metrics))

    return timed(work), metrics


def testbed_run(run: Run, root: Path) -> float:
    return timed(lambda: execute(run, root))


def bench(run: Run, tmp: Path, repeats: int) -> None:
    """Check that both paths give the same test metrics, then time them interleaved."""
    execute(run, tmp / "check")
    _, mine = hand_run(run, tmp)
    theirs = json.loads((tmp / "check" / run.id / "results.json").read_text())["metrics"]
    same = all(abs(theirs[k] - v) <= 1e-6 for k, v in mine.items())
    fresh = lambda: tmp / f"r{len(list(tmp.iterdir()))}"  # noqa: E731  (an empty sweep folder each time)
    times = interleaved({"hand-written loop": lambda: hand_run(run, tmp)[0],
                         "testbed sweep run": lambda: testbed_run(run, fresh())}, repeats=repeats)
    hand, mine_t = (statistics.median(times[k]) for k in times)
    low = min(times["testbed sweep run"]) - min(times["hand-written loop"])
    print(f"  {run.axes['model']:<6} width {run.axes['model.width']:>3} n_train 500"
          f" ({run.id}): hand {hand * 1e3:7.1f} ms, testbed {mine_t * 1e3:7.1f} ms, ratio {mine_t / hand:5.2f},"
          f" fixed cost median {(mine_t - hand) * 1e3:6.1f} ms (min-min {low * 1e3:6.1f} ms),"
          f" same test metrics: {same}")


def main() -> None:
    args = bench_args(__doc__, repeats=5)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = small_runs(tmp)
        print(f"sweep overhead: {len(runs)} runs, {args.threads} threads, {args.repeats} interleaved rounds")
        for run in runs:
            bench(run, tmp, args.repeats)


if __name__ == "__main__":
    main()

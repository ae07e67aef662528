"""Environment generation: samples per second of SpuriousShapes (latents drawn and images rendered), at
28 x 28 x 3, for the regimes of the quickstart sweep.

    .venv/bin/python benchmarks/envgen.py [--n 50000] [--repeats 5] [--threads 2]
"""

import statistics

from common import bench_args, interleaved, timed

from testbed.envs import SpuriousShapes
from testbed.envs.base import EnvSpec

REGIMES = {"confounded (colour)": {"label_noise": 0.25},
           "shortcut (noise, small shapes)": {"label_noise": 0.0, "causal_difficulty": 0.5},
           "patch attribute": {"spurious_feature": "patch"}}


def main() -> None:
    args = bench_args(__doc__, repeats=5, n=50000)
    envs = {name: SpuriousShapes(n_train=args.n, **kw) for name, kw in REGIMES.items()}
    spec = EnvSpec("train", 0.9)
    times = interleaved({name: (lambda env=env: timed(lambda: env.make(spec, 0))) for name, env in envs.items()},
                        repeats=args.repeats)
    print(f"environment generation, 28x28x3, {args.n} samples per call, {args.threads} threads, "
          f"{args.repeats} interleaved rounds (target >= 100k samples/s)")
    for name, t in times.items():
        print(f"  {name:<32} median {args.n / statistics.median(t) / 1e3:7.1f}k samples/s"
              f"   best {args.n / min(t) / 1e3:7.1f}k samples/s")


if __name__ == "__main__":
    main()

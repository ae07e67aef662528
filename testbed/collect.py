"""One tidy table from a sweep: a row per run x environment x metric, with the run's scale columns."""

import json
from pathlib import Path

import pandas as pd

from testbed.results import write_atomic

SCALE = ["params", "n_train", "steps", "flops", "corr"]


def parse_key(key: str) -> tuple[str, str, str, str, float | None]:
    """`test/ood:corr=0.10/acc` -> (stage, env, role, metric, env_corr); aggregates have env "all".
    Environments without a set correlation (`ood:test` of a WILDS split) get env_corr None."""
    stage, *env, metric = key.split("/")
    if not env:
        return stage, "all", "", metric, None
    role, _, rest = env[0].partition(":")
    return stage, env[0], role, metric, float(rest[5:]) if rest.startswith("corr=") else None


def run_rows(run_dir: Path) -> list[dict]:
    run = json.loads((run_dir / "run.json").read_text())
    res = json.loads((run_dir / "results.json").read_text())
    axes = {k: v if isinstance(v, str | int | float) else json.dumps(v) for k, v in run["axes"].items()}
    base = {"run": run_dir.name, "sweep": run["sweep"], "baseline": res["model"], "seed": run["seed"],
            "params": res["params"], "n_train": res["n_train"], "steps": res["steps"], "flops": res["train_flops"],
            "corr": res["train_corr"], "wall_time_s": res["wall_time_s"], **axes}
    rows = []
    for key, value in res["metrics"].items():
        stage, env, role, metric, env_corr = parse_key(key)
        rows.append({**base, "stage": stage, "env": env, "role": role, "env_corr": env_corr,
                     "metric": metric, "value": value})
    return rows


def collect(sweep_dir: Path) -> pd.DataFrame:
    """Every finished run (with a `done` marker) under `sweep_dir`."""
    rows = [row for d in sorted(sweep_dir.iterdir()) if (d / "done").exists() for row in run_rows(d)]
    if not rows:
        from testbed.errors import ConfigError

        raise ConfigError(f"sweep_dir: no finished runs in {sweep_dir}; run `testbed sweep` first")
    return pd.DataFrame(rows)


def save_table(table: pd.DataFrame, sweep_dir: Path) -> Path:
    path = sweep_dir / "results.csv"
    write_atomic(path, table.to_csv(index=False))
    return path


def wide(table: pd.DataFrame, stage: str = "test") -> pd.DataFrame:
    """One row per run, one column per aggregate metric (env "all"), plus the run's columns."""
    agg = table[(table.stage == stage) & (table.env == "all")]
    keys = [c for c in agg.columns if c not in ("stage", "env", "role", "env_corr", "metric", "value")]
    return agg.pivot_table(index=keys, columns="metric", values="value").reset_index()

"""A sweep file and the runs it describes: load and check it, then expand it into runs (no torch, no Lightning).

A sweep crosses a base config with axes (a grid, a star or a seeded random search), hyperparameter draws and
seeds. `testbed.sweep.resolve` then resolves each run's config and hashes it into the run's id.
"""

import itertools
import json
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from testbed.errors import ConfigError, check_keys, check_positive
from testbed.hparams import Space, draw_all, parse_space
from testbed.sweep.cluster import cluster_settings
from testbed.sweep.stages import check_stages

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's loader where PyYAML has it: much faster


@dataclass
class Sweep:
    """The contents of a sweep YAML file.

    Args:
        name: folder of the sweep under `--out`.
        configs: base LightningCLI config files, merged in order (paths relative to the working directory).
        args: base overrides, `config.key: value` (e.g. `trainer.max_epochs: 5`).
        axes: `config.key: [values]` (e.g. `model.width: [16, 32]`, `model: [ERM, Oracle]`), or for random
            search `{low, high, log}` ranges; the key `config` takes config files, as a list or as
            `{label: file}`, to sweep regimes.
        seeds: each run is repeated with `seed_everything` and `data.seed` set to each seed.
        search: `grid` (every combination), `star` (each numeric axis varied on its own while the other numeric
            axes stay at their last value, the largest as a user lists them; non-numeric axes such as `config`
            and `model` are crossed: a scaling study along each axis for the cost of one) or `random` (`samples`
            draws, seeded per axis name so that adding an axis never changes the draws of the others).
        pack: train runs that differ only in their seed and hyperparameter draws (lr, weight_decay, GroupDRO's
            eta) as one batched model where that gives the same results (ERM, Oracle or GroupDRO on an mlp or
            cnn, no validation or checkpoints: `testbed.run.packing.pack_key`).
        hparams: hyperparameters drawn at every scale point, apart from the axes: `config.key: [values]` or
            `{low, high, log}`, or `default` for the ranges each baseline declares (`Baseline.tunable`).
        draws: how many hyperparameter draws per scale point (each value seeded by `hparams_seed`, the draw and
            its key); without it, the grid of the lists in `hparams`.
        hparams_seed: the seed of the draws.
        stages: runs that start from an earlier stage's run at the same scale point and seed
            (`testbed.sweep.stages`).
        keep_checkpoints: keep every stage parent's final checkpoint, not only while a child still needs it.
        cluster: resources of `--executor submitit`'s array tasks and Ray's GPUs per task
            (`testbed.sweep.cluster.Cluster`); the command line's flags override it.
    """

    name: str
    configs: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    search: Literal["grid", "star", "random"] = "grid"
    samples: int = 10
    search_seed: int = 0
    pack: bool = True
    hparams: dict[str, Any] | str | None = None
    draws: int | None = None
    hparams_seed: int = 0
    stages: dict[str, dict[str, Any]] | None = None
    keep_checkpoints: bool = False
    cluster: dict[str, Any] | None = None


@dataclass
class Run:
    sweep: str
    axes: dict[str, Any]  # axis name -> value (a label for `config` files): the scale point
    seed: int
    argv: list[str]  # LightningCLI arguments, without the subcommand
    hparams: dict[str, Any] = field(default_factory=dict)  # the drawn hyperparameters, by config key
    draw: int = 0  # index of the hyperparameter draw
    id: str = ""
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # the resolved `fit` config, from `identify`
    stage: str = ""  # the sweep stage of the run (`testbed.sweep.stages`), if the sweep has stages
    parent: str = ""  # the id of the run whose final weights this one starts from


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; every problem is a ConfigError naming the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: sweep file {str(path)!r} {'is a folder' if path.is_dir() else 'does not exist'}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config: {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {path} must be a mapping with keys name, configs, args, axes, seeds")
    check_keys("sweep", raw, [f.name for f in fields(Sweep)])
    if not isinstance(raw.get("name"), str):
        raise ConfigError("sweep.name: required, a folder name for the sweep's runs")
    for key, kind in [("configs", list), ("args", dict), ("axes", dict), ("seeds", list)]:
        if key in raw and not isinstance(raw[key], kind):
            raise ConfigError(f"sweep.{key}: must be a {kind.__name__}, got {type(raw[key]).__name__}")
    sweep = Sweep(**raw)
    if sweep.search not in ("grid", "star", "random"):
        raise ConfigError(f"sweep.search: {sweep.search!r} is not allowed; choose one of grid, star, random")
    check_positive("sweep.samples", sweep.samples)
    if not isinstance(sweep.pack, bool):
        raise ConfigError(f"sweep.pack: {sweep.pack!r} is not allowed; choose one of true, false")
    for name, values in sweep.axes.items():
        if not values or not isinstance(values, list | dict):
            raise ConfigError(f"sweep.axes.{name}: must be a non-empty list of values")
        if isinstance(values, dict) and name != "config" and not {"low", "high"} <= set(values):
            raise ConfigError(f"sweep.axes.{name}: a range needs low and high")
    if sweep.draws is not None and (isinstance(sweep.draws, bool) or not isinstance(sweep.draws, int)
                                    or sweep.draws < 1):
        raise ConfigError(f"sweep.draws: {sweep.draws!r} is not allowed; it must be a positive integer")
    if sweep.hparams is not None and sweep.hparams != "default":
        for key in parse_space(sweep.hparams, "sweep.hparams"):
            if key in sweep.axes:
                raise ConfigError(f"sweep.hparams.{key}: also a scale axis; a key is either swept (axes) or tuned "
                                  "(hparams)")
    if sweep.stages is not None:
        check_stages(sweep.stages, sweep.axes)
    if not isinstance(sweep.keep_checkpoints, bool):
        raise ConfigError(f"sweep.keep_checkpoints: {sweep.keep_checkpoints!r} is not allowed; choose one of true, "
                          "false")
    cluster_settings(sweep.cluster)
    if sweep.hparams == "default" and sweep.draws is None:
        raise ConfigError("sweep.draws: required with hparams: default (its ranges are drawn); e.g. draws: 3")
    for file in sweep.configs + list(config_files(sweep).values()):
        if not Path(file).is_file():
            raise ConfigError(f"sweep.configs: {file!r} does not exist (paths are relative to the working directory)")
    return sweep


def config_files(sweep: Sweep) -> dict[str, str]:
    """The `config` axis as {label: file}; a plain list is labelled by file stem."""
    files = sweep.axes.get("config", {})
    return files if isinstance(files, dict) else {Path(f).stem: f for f in files}


def draw(values: list | dict, rng: random.Random) -> Any:
    if isinstance(values, list):
        return rng.choice(values)
    low, high = values["low"], values["high"]
    if values.get("log"):
        import math

        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    return round(value) if isinstance(low, int) and isinstance(high, int) else value


def combinations(sweep: Sweep, crossed: dict[str, list] | None = None) -> list[dict[str, Any]]:
    """The scale points: the search over the sweep's axes, each crossed with every combination of `crossed` (a
    stage's own axes, such as Online's `fraction`: a dose-response needs every dose at every scale point, so the
    star or the random search never thins them)."""
    axes = {k: (list(config_files(sweep)) if k == "config" else v) for k, v in sweep.axes.items()}
    crossed = crossed or {}
    if any(not isinstance(v, list) for v in crossed.values()):
        raise ConfigError("sweep.stages: a stage's axes are lists of values (every value at every scale point)")
    if sweep.search in ("grid", "star"):
        if any(isinstance(v, dict) for v in axes.values()):
            raise ConfigError("sweep.axes: ranges ({low, high}) need search: random")
        grid = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
        points = grid if sweep.search == "grid" else star(grid, axes)
    else:
        seeded = lambda i, name: random.Random(f"{sweep.search_seed}/{i}/{name}")  # noqa: E731
        points = [{k: draw(v, seeded(i, k)) for k, v in axes.items()} for i in range(sweep.samples)]
    doses = list(itertools.product(*crossed.values()))
    return [{**point, **dict(zip(crossed, combo))} for point in points for combo in doses]


def star(grid: list[dict[str, Any]], axes: dict[str, list]) -> list[dict[str, Any]]:
    """The points of `grid` where at most one numeric axis is off its last value."""
    numeric = [k for k, v in axes.items() if all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)]
    return [c for c in grid if sum(c[k] != axes[k][-1] for k in numeric) <= 1]


def as_arg(key: str, value: Any) -> str:
    return f"--{key}={value if isinstance(value, str) else json.dumps(value)}"


def model_class(sweep: Sweep, combo: dict[str, Any]) -> type:
    """The baseline class a scale point trains: its `model` axis value, else the last `model` in the args and
    config files (the `config` axis file merges after `configs`)."""
    name = combo.get("model") or sweep.args.get("model")
    files = [*sweep.configs, *([config_files(sweep)[combo["config"]]] if "config" in combo else [])]
    for file in reversed(files):
        if name:
            break
        model = (yaml.load(Path(file).read_text(), Loader=Loader) or {}).get("model")
        name = model.get("class_path") if isinstance(model, dict) else model
    if not name:
        raise ConfigError("sweep.hparams: default needs the baseline (a model axis, args or config files' model)")
    import importlib

    module, _, cls = name.rpartition(".")
    return getattr(importlib.import_module(module or "testbed.baselines"), cls)


def hparam_draws(sweep: Sweep, combo: dict[str, Any]) -> list[dict[str, Any]]:
    """The hyperparameter draws of one scale point ([{}] without an `hparams` block)."""
    if sweep.hparams is None:
        return [{}]
    if sweep.hparams == "default":
        space: Space = {f"model.{k}": v for k, v in model_class(sweep, combo).tunable.items()}
    else:
        space = parse_space(sweep.hparams, "sweep.hparams")
    # One check for `hparams: default`, an explicit block and a stage's axes: a drawn value would replace the
    # axis value in config.yaml while run.json still shows the axis value.
    source = "hparams" if sweep.hparams != "default" else f"hparams: default, {model_class(sweep, combo).__name__}"
    for key in space:
        if key in combo:
            raise ConfigError(f"sweep.hparams: {key} is drawn ({source}) and also an axis; a key is either swept "
                              "(axes) or tuned (hparams)")
    return draw_all(space, sweep.draws, sweep.hparams_seed)


def expand(sweep: Sweep, crossed: dict[str, list] | None = None) -> list[Run]:
    """Every run of the sweep, in order: scale points (crossed with `crossed`, `combinations`) x hyperparameter
    draws x seeds. Class axes (`model`, `data`) come before their knobs."""
    files = config_files(sweep)
    runs = []
    for combo in combinations(sweep, crossed):
        for draw_index, hparams in enumerate(hparam_draws(sweep, combo)):
            for seed in sweep.seeds:
                argv = [arg for f in sweep.configs for arg in ("-c", str(Path(f).resolve()))]
                if "config" in combo:
                    argv += ["-c", str(Path(files[combo["config"]]).resolve())]
                knobs = {**sweep.args, **{k: v for k, v in combo.items() if k != "config"}, **hparams}
                argv += [as_arg(k, v) for k, v in sorted(knobs.items(), key=lambda kv: kv[0].count("."))]
                argv += [f"--seed_everything={seed}", f"--data.seed={seed}"]
                runs.append(Run(sweep.name, combo, seed, argv, hparams, draw_index))
    return runs



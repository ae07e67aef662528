"""Sweeps: a base config crossed with axes (a grid or a seeded random search) and seeds, run resumably.

A run's identity is a hash of its resolved config. It writes into `<out>/<sweep>/<hash>/`: `run.json`
(its axis values and arguments) first, then Lightning's `config.yaml` and `metrics.csv`, `results.json`,
and last a `done` marker, each file written atomically. Running a sweep again skips done runs, redoes
half-written ones (a run killed mid-way has no `done`), and a failed run leaves `error.txt` without
stopping the others; it is tried again on the next invocation.

Every run's config is resolved once, up front; a worker builds the run from it (`testbed.runner`) instead of
parsing its arguments again, which costs more than a tiny run trains.
"""

import hashlib
import itertools
import json
import random
import shutil
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from testbed.errors import ConfigError, check_positive
from testbed.hparams import Space, draw_all, parse_space
from testbed.results import write_atomic
from testbed.stages import check_stages, record_parent

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
            eta) as one batched model where that gives the same results (ERM, Oracle or GroupDRO on an mlp or cnn, no
            validation or checkpoints: `testbed.runner.pack_key`).
        hparams: hyperparameters drawn at every scale point, apart from the axes: `config.key: [values]` or
            `{low, high, log}`, or `default` for the ranges each baseline declares (`Baseline.tunable`).
        draws: how many hyperparameter draws per scale point (each value seeded by `hparams_seed`, the draw and
            its key); without it, the grid of the lists in `hparams`.
        hparams_seed: the seed of the draws.
        stages: runs that start from an earlier stage's run at the same scale point and seed (`testbed.stages`).
        keep_checkpoints: keep every stage parent's final checkpoint, not only while a child still needs it.
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
    stage: str = ""  # the sweep stage of the run (`testbed.stages`), if the sweep has stages
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
    allowed = [f.name for f in fields(Sweep)]
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"sweep.{key}: unknown key; allowed keys are {', '.join(allowed)}")
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


def combinations(sweep: Sweep) -> list[dict[str, Any]]:
    axes = {k: (list(config_files(sweep)) if k == "config" else v) for k, v in sweep.axes.items()}
    if sweep.search in ("grid", "star"):
        if any(isinstance(v, dict) for v in axes.values()):
            raise ConfigError("sweep.axes: ranges ({low, high}) need search: random")
        grid = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
        return grid if sweep.search == "grid" else star(grid, axes)
    seeded = lambda i, name: random.Random(f"{sweep.search_seed}/{i}/{name}")  # noqa: E731
    return [{k: draw(v, seeded(i, k)) for k, v in axes.items()} for i in range(sweep.samples)]


def star(grid: list[dict[str, Any]], axes: dict[str, list]) -> list[dict[str, Any]]:
    """The points of `grid` where at most one numeric axis is off its last value."""
    numeric = [k for k, v in axes.items() if all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)]
    return [c for c in grid if sum(c[k] != axes[k][-1] for k in numeric) <= 1]


def as_arg(key: str, value: Any) -> str:
    return f"--{key}={value if isinstance(value, str) else json.dumps(value)}"


def model_class(sweep: Sweep, combo: dict[str, Any]) -> type:
    """The baseline class a scale point trains: its `model` axis value, else the last `model` in the args and
    config files (the `config` axis file merges after `configs`)."""
    from testbed.runner import load

    name = combo.get("model") or sweep.args.get("model")
    files = [*sweep.configs, *([config_files(sweep)[combo["config"]]] if "config" in combo else [])]
    for file in reversed(files):
        if name:
            break
        model = (yaml.load(Path(file).read_text(), Loader=Loader) or {}).get("model")
        name = model.get("class_path") if isinstance(model, dict) else model
    if not name:
        raise ConfigError("sweep.hparams: default needs the baseline (a model axis, args or config files' model)")
    import testbed.baselines

    return getattr(testbed.baselines, name) if "." not in name else load(name)


def hparam_draws(sweep: Sweep, combo: dict[str, Any]) -> list[dict[str, Any]]:
    """The hyperparameter draws of one scale point ([{}] without an `hparams` block)."""
    if sweep.hparams is None:
        return [{}]
    if sweep.hparams == "default":
        space: Space = {f"model.{k}": v for k, v in model_class(sweep, combo).tunable.items()}
    else:
        space = parse_space(sweep.hparams, "sweep.hparams")
    return draw_all(space, sweep.draws, sweep.hparams_seed)


def expand(sweep: Sweep) -> list[Run]:
    """Every run of the sweep, in order: scale points x hyperparameter draws x seeds. Class axes (`model`,
    `data`) come before their knobs."""
    files = config_files(sweep)
    runs = []
    for combo in combinations(sweep):
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


def identify(runs: list[Run]) -> None:
    """Resolve each run's config and set its id to a hash of it. Every distinct environment and model
    configuration (seeds aside) is also instantiated once (cheap for most environments, which generate data in
    `setup`; a WILDS environment reads its metadata), so a bad key or value fails before anything runs."""
    from testbed.cli import resolver

    parser = resolver()
    checked, parsed = set(), {}
    for run in runs:
        # Runs that differ only in their seed are parsed once (parsing costs ~0.1 s a run), then given the seed.
        seeds = (f"--seed_everything={run.seed}", f"--data.seed={run.seed}")
        key = tuple(arg for arg in run.argv if arg not in seeds)
        if key not in parsed:
            parsed[key] = parser.parse_args(run.argv)
        config = parsed[key].clone()
        config["seed_everything"], config["data.init_args.seed"] = run.seed, run.seed
        for name in ("optimizer", "lr_scheduler"):
            if config.get(name) is not None:
                raise ConfigError(f"{name}: not supported in sweeps; a baseline's optimiser is set by model.lr and "
                                  "model.weight_decay")
        text = parser.dump(config, skip_validation=True)
        run.id = hashlib.sha1(text.encode()).hexdigest()[:12]
        run.config = yaml.load(parser.dump(config, skip_none=False, skip_validation=True), Loader=Loader)
        # Seeds change no check: each environment and model configuration is built once, not once per seed.
        data = {**run.config["data"], "init_args": {k: v for k, v in run.config["data"]["init_args"].items()
                                                     if k != "seed"}}
        classes = json.dumps([run.config["model"], data], sort_keys=True)
        if classes not in checked:
            parser.instantiate_classes(config)
            checked.add(classes)


def run_trainer(out: Path) -> dict[str, Any]:
    """The trainer settings of every sweep run: it logs into `out` itself, without progress output, and
    without hparams.yaml (config.yaml holds the same; writing it costs a few ms per stage)."""
    csv = {"save_dir": str(out), "name": "", "version": "", "prefix": "", "flush_logs_every_n_steps": 100}
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": csv}
    return {"logger": logger, "enable_progress_bar": False, "enable_model_summary": False,
            "enable_autolog_hparams": False}


def start(run: Run, root: Path) -> Path | None:
    """The run's empty folder with its run.json, or None if the run is done."""
    out = root / run.id
    if (out / "done").exists():
        return None
    if out.exists():
        shutil.rmtree(out)  # half-written by a killed or failed attempt
    out.mkdir(parents=True)
    described = {k: v for k, v in asdict(run).items() if k != "config"}  # config.yaml holds the config
    write_atomic(out / "run.json", json.dumps(described, indent=2) + "\n")
    return out


def execute(run: Run, root: Path) -> str:
    """Run one training run into `root/<id>/`; returns "done", "skipped" or "failed"."""
    return execute_job([run], root)[0]


def execute_job(runs: list[Run], root: Path) -> list[str]:
    """Run these runs into `root/<id>/`, as one packed job if there are several (runs of one `pack_key`);
    returns "done", "skipped" or "failed" for each. A failure fails the job's every run."""
    from testbed.runner import fit_packed_runs, fit_resolved

    outs = {run.id: start(run, root) for run in runs}
    todo = [run for run in runs if outs[run.id] is not None]
    configs = [{**run.config, "trainer": {**run.config["trainer"], **run_trainer(outs[run.id])}} for run in todo]
    try:
        fit_packed_runs(configs) if len(configs) > 1 else [fit_resolved(c) for c in configs]
    except (Exception, SystemExit):
        for run in todo:
            write_atomic(outs[run.id] / "error.txt", traceback.format_exc())
        return ["skipped" if outs[run.id] is None else "failed" for run in runs]
    for run in todo:
        record_parent(run, outs[run.id])
        write_atomic(outs[run.id] / "done", "")
    return ["skipped" if outs[run.id] is None else "done" for run in runs]


# --- packing (issue 17): grouping runs into packed jobs and saying what packs ---
def packs(runs: list[Run]) -> list[list[Run]]:
    """The runs grouped into jobs: those of one `pack_key` together (seeds and hyperparameter draws of one
    scale point), every other run alone."""
    from testbed.runner import pack_key

    jobs: dict[str, list[Run]] = {}
    for run in runs:
        jobs.setdefault(pack_key(run.config) or run.id, []).append(run)
    return list(jobs.values())


def pack_summary(jobs: list[list[Run]]) -> str:
    """What packs, per baseline: e.g. `8 runs train in 2 packed models (ERM 4, Oracle 4); 2 one by one (IRM 2)`."""
    def per_model(runs: list[Run]) -> str:
        names = [run.config["model"]["class_path"].rsplit(".", 1)[-1] for run in runs]
        counts = ", ".join(f"{name} {names.count(name)}" for name in sorted(set(names)))
        return f" ({counts})" if counts else ""

    packed = [run for job in jobs if len(job) > 1 for run in job]
    alone = [run for job in jobs if len(job) == 1 for run in job]
    return (f"{len(packed)} runs train in {sum(len(job) > 1 for job in jobs)} packed models{per_model(packed)}; "
            f"{len(alone)} one by one{per_model(alone)}")
# --- end packing ---

"""`identify` parses and dumps once per scale point, the runs that differ only in seeds and drawn numbers: it must
give every run the id and config that parsing and dumping each run gives (`reference_identify`)."""

import copy
import json
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, ROOT

from testbed.errors import ConfigError
from testbed.run.config import resolver
from testbed.sweep import expand, load_sweep, resolve
from testbed.sweep.resolve import check_trainer, config_id, identify, staged_runs
from testbed.sweep.spec import Loader, Run, Sweep

SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))
TINY = {"model": "ERM", "model.arch": "mlp", "model.width": 8, "data.n_train": 200, "trainer.max_epochs": 1}


@pytest.fixture(autouse=True)
def one_parser(monkeypatch):
    """Both functions share one `fit` parser (built in ~0.5 s), as they would build the same."""
    monkeypatch.setattr(resolve, "resolver", shared_resolver)


@cache
def shared_resolver():
    return resolver()


def reference_identify(runs: list[Run]) -> None:
    """`identify` done slowly: every run parsed (seeds aside) and dumped by jsonargparse."""
    parser = resolve.resolver()
    checked, parsed, trainers = set(), {}, set()
    for run in runs:
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
        run.config = yaml.load(parser.dump(config, skip_none=False, skip_validation=True), Loader=Loader)
        run.id = config_id(run.config)
        data = {**run.config["data"], "init_args": {k: v for k, v in run.config["data"]["init_args"].items()
                                                     if k != "seed"}}
        classes = json.dumps([run.config["model"], data], sort_keys=True)
        if classes not in checked:
            parser.instantiate_classes(config)
            checked.add(classes)
        trainer = json.dumps(run.config["trainer"], sort_keys=True)
        if trainer not in trainers:
            check_trainer(run.config["trainer"])
            trainers.add(trainer)


def both_ways(runs: list[Run]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Each run's id and config (as `repr`: 1 and 1.0 differ) from `identify` and from `reference_identify`."""
    fast, slow = copy.deepcopy(runs), copy.deepcopy(runs)
    identify(fast)
    reference_identify(slow)
    return [(r.id, repr(r.config)) for r in fast], [(r.id, repr(r.config)) for r in slow]


def stage_sweeps(sweep: Sweep) -> list[Sweep]:
    """The sweep, or each of its stages as `staged_runs` expands it."""
    return [replace(sweep, stages=None, args={**sweep.args, **stage.get("args", {})},
                    axes={**sweep.axes, **stage.get("axes", {})}) for stage in (sweep.stages or {"": {}}).values()]


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_sweep_file_gets_the_ids_and_configs_of_a_parse_and_dumps_per_run(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # sweep files name their config files relative to the repository
    stages = stage_sweeps(load_sweep(path))
    runs = [run for sweep in stages for run in expand(sweep)[:24 // len(stages)]]
    fast, slow = both_ways(runs)
    assert len(fast) == len(runs) and len({run_id for run_id, _ in fast}) > 1  # several configs compared
    assert fast == slow


def write(path: Path, **fields) -> Sweep:
    path.write_text(yaml.safe_dump({"name": "s", "configs": [str(CONFIGS / "envs" / "confounded.yaml")],
                                    "args": TINY, **fields}))
    return load_sweep(path)


@pytest.mark.parametrize("fields", [
    # Ranges drawn per scale point: each draw's numbers are set on the scale point's one parse.
    {"hparams": {"model.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "model.weight_decay": {"low": 1e-6,
     "high": 1e-2, "log": True}}, "draws": 3, "axes": {"model.width": [8, 16]}, "seeds": [0, 1]},
    # Ints for float fields (parsed to floats, 0 too, which equals weight_decay's default 0.0), int fields of the
    # environment and the Trainer, and draws whose lr is an int in one and a float in another.
    {"hparams": {"model.weight_decay": [0, 1], "model.lr": [1, 0.001], "data.n_train": [100],
                 "trainer.max_steps": [3, 5]}, "seeds": [0, 1]},
    # Draws parsed one by one: a number for an Optional field (the first run's check fails, so each draw is
    # parsed), strings, a number whose key is given again after it (the second wins), a class.
    {"hparams": {"model.arch": ["mlp", "cnn"], "trainer.max_epochs": [1, 2]}, "seeds": [0, 3]},
    {"hparams": {"model.eta": [0.1, 0.2]}, "args": {**TINY, "model": "GroupDRO", "model.init_args.eta": 0.05}},
    {"hparams": {"data": ["SpuriousShapes", "GaussianGroups"], "model.eta": [0.01, 0.1]},
     "args": {**TINY, "model": "GroupDRO"}},
])
def test_hyperparameter_draws_get_the_ids_and_configs_of_a_parse_and_dumps_per_run(tmp_path, fields):
    runs = expand(write(tmp_path / "s.yaml", **fields))
    fast, slow = both_ways(runs)
    # Several runs compared (a key given again after its draw makes the draws of a seed one config: the same id).
    assert len(fast) == len(runs) > 1
    assert fast == slow


def test_staged_runs_are_linked_as_before(tmp_path, monkeypatch):
    stages = {"erm": {"args": {"model": "ERM"}},
              "online": {"from": "erm", "args": {"model": "Online", "model.budget": 1000},
                         "axes": {"model.fraction": [0.0, 0.1]}}}
    sweep = write(tmp_path / "s.yaml", axes={"model.width": [8]}, hparams={"model.lr": [0.01, 0.003]},
                  seeds=[0, 1], stages=stages)
    fast = staged_runs(sweep, tmp_path / "out")
    monkeypatch.setattr(resolve, "identify", reference_identify)
    slow = staged_runs(sweep, tmp_path / "out")
    assert len(fast) == 12 and [(r.id, r.parent, repr(r.config)) for r in fast] == [
        (r.id, r.parent, repr(r.config)) for r in slow]


def test_draws_of_a_scale_point_are_parsed_and_dumped_once(tmp_path, monkeypatch):
    calls = []
    parser = shared_resolver()
    for name in ("parse_args", "dump"):
        method = getattr(parser, name)
        monkeypatch.setattr(parser, name, lambda *a, _name=name, _method=method, **k: calls.append(_name) or
                            _method(*a, **k))
    lr = {"low": 1e-4, "high": 1e-2, "log": True}
    runs = expand(write(tmp_path / "s.yaml", hparams={"model.lr": lr, "model.weight_decay": [0.0, 1e-4]}, draws=4,
                        axes={"model.width": [8, 16]}, seeds=[0, 1]))
    identify(runs)
    assert len(runs) == 16 and calls == ["parse_args", "dump"] * 2  # one parse and one dump per width

"""Resolving a sweep's runs: each run's config as `testbed fit` would resolve it, its id (a hash of it and of
its parent's id, in stages), and every check that needs the classes (environments, models, the Trainer) done
once per distinct configuration, before anything runs or is written.
"""

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from lightning import Trainer
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from testbed.cli import resolver
from testbed.errors import ConfigError
from testbed.sweep.fit import instantiate
from testbed.sweep.spec import Loader, Run, Sweep, expand
from testbed.sweep.stages import CHECKPOINT, SAVE, order
from testbed.trainer import trainer_error


def staged_runs(sweep: Sweep, root: Path) -> list[Run]:
    """Every run of the sweep, with ids, parents first. Each stage is the sweep with the stage's args and axes
    added; each child run is linked to its parent (`Run.parent`), hashed with it, and set to start from its
    checkpoint; each parent run saves one."""
    if not sweep.stages:
        runs = expand(sweep)
        identify(runs)
        return runs
    by_stage: dict[str, list] = {}
    for name in order(sweep.stages):
        stage = sweep.stages[name]
        sub = replace(sweep, stages=None, args={**sweep.args, **stage.get("args", {})},
                      axes={**sweep.axes, **stage.get("axes", {})})
        runs = expand(sub)
        identify(runs)
        for run in runs:
            run.stage = name
        if (parent := stage.get("from")) is not None:
            link(runs, by_stage[parent], list(sweep.axes), root)
        by_stage[name] = runs
    return [run for runs in by_stage.values() for run in runs]


def link(children: list[Run], parents: list[Run], shared: list[str], root: Path) -> None:
    """Give each child its parent's id (in its own id too) and the parent's checkpoint as `model.init_ckpt`."""
    draws = len({p.draw for p in parents})
    key = lambda run, draw: (tuple(str(run.axes.get(a)) for a in shared), run.seed, draw)  # noqa: E731
    index = {key(p, p.draw): p for p in parents}
    for child in children:
        parent = index.get(key(child, child.draw if draws > 1 else 0))
        if parent is None:
            raise ConfigError(f"sweep.stages.{child.stage}: its hyperparameter draw {child.draw} has no parent run; a "
                              f"parent stage has one draw or as many as its children")
        child.parent = parent.id
        child.id = hashlib.sha1(f"{child.id}/{parent.id}".encode()).hexdigest()[:12]
        child.config["model"]["init_args"]["init_ckpt"] = str(root / parent.id / CHECKPOINT)
        callbacks = parent.config["trainer"].get("callbacks") or []
        if not any(c.get("class_path") == SAVE for c in callbacks):
            save = {"class_path": SAVE, "init_args": {"path": str(root / parent.id / CHECKPOINT)}}
            parent.config["trainer"]["callbacks"] = [*callbacks, save]


def identify(runs: list[Run]) -> None:
    """Resolve each run's config and set its id to a hash of it. Every distinct environment and model
    configuration (seeds aside) is also instantiated once (cheap for most environments, which generate data in
    `setup`; a WILDS environment reads its metadata), so a bad key or value fails before anything runs."""
    parser = resolver()
    checked, parsed, trainers = set(), {}, set()
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
        trainer = json.dumps(run.config["trainer"], sort_keys=True)
        if trainer not in trainers:
            check_trainer(run.config["trainer"])
            trainers.add(trainer)


def check_trainer(settings: dict[str, Any]) -> None:
    """Build the Trainer of these settings as a sweep run will (its logger aside), without writing anything: a
    setting Lightning refuses, or absent hardware, fails before any run starts (`testbed fit` checks the same
    when it builds its Trainer)."""
    try:
        Trainer(**{**{k: instantiate(v) for k, v in settings.items()}, "logger": False})
    except ConfigError:
        raise
    except (MisconfigurationException, ValueError, TypeError, ImportError, RuntimeError) as err:
        raise ConfigError(trainer_error(err)) from None

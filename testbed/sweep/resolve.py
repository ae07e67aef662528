"""Resolving a sweep's runs: each run's config as `testbed fit` would resolve it, its id (a hash of it and of
its parent's id, in stages), and every check that needs the classes (environments, models, the Trainer) done
once per distinct configuration, before anything runs or is written.
"""

import hashlib
import json
import math
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning import Trainer
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from testbed.errors import ConfigError
from testbed.run.config import resolver
from testbed.run.fit import instantiate, load
from testbed.sweep.spec import Loader, Run, Sweep, as_arg, expand
from testbed.sweep.stages import CHECKPOINT, SAVE, order
from testbed.training.compat import option_types
from testbed.training.trainer import trainer_error


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
        sub = replace(sweep, stages=None, args={**sweep.args, **stage.get("args", {})})
        runs = expand(sub, crossed=stage.get("axes", {}))
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


ID_SCHEME = 2  # how run ids are made: 1, a hash of jsonargparse's YAML dump; 2, of the config's canonical JSON


def identify(runs: list[Run]) -> None:
    """Resolve each run's config and set its id to a hash of it (`config_id`). Every distinct environment and
    model configuration (seeds aside) is also instantiated once (cheap for most environments, which generate data
    in `setup`; a WILDS environment reads its metadata), so a bad key or value fails before anything runs.

    jsonargparse parses and dumps once per scale point (`Points`: ~50 ms a parse, ~15 ms a dump); each run's seeds
    and drawn numbers are then set on that config, with the types parsing would give them: the configs of a
    parse per run (tests/test_sweep_identify.py)."""
    parser = resolver()
    points, checked, trainers = Points(parser), set(), set()
    for run in runs:
        point, values = points.of(run)
        for name in ("optimizer", "lr_scheduler"):
            if point.namespace.get(name) is not None:
                raise ConfigError(f"{name}: not supported in sweeps; a baseline's optimiser is set by model.lr and "
                                  "model.weight_decay")
        run.config = point.config(values)
        run.id = config_id(run.config)
        # Seeds change no check: each environment and model configuration is built once, not once per seed.
        data = {**run.config["data"], "init_args": {k: v for k, v in run.config["data"]["init_args"].items()
                                                     if k != "seed"}}
        classes = json.dumps([run.config["model"], data], sort_keys=True)
        if classes not in checked:
            parser.instantiate_classes(with_values(point.namespace, values))
            checked.add(classes)
        trainer = json.dumps(run.config["trainer"], sort_keys=True)
        if trainer not in trainers:
            check_trainer(run.config["trainer"])
            trainers.add(trainer)


def config_id(config: dict[str, Any]) -> str:
    """A run's id: the hash of its resolved config as canonical JSON (sorted keys), None values left out so that
    a new option whose default is None keeps existing ids."""
    def pruned(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: pruned(v) for k, v in node.items() if v is not None}
        return [pruned(v) for v in node] if isinstance(node, list) else node

    text = json.dumps(pruned(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


NUMBER_KEYS = ("model", "data", "trainer")  # a drawn number for `model.X`, `data.X` or `trainer.X` can be set


@dataclass
class Point:
    """Runs that parse to one config but for some numbers: their seeds and the numbers drawn for them
    (`Points.of`). `namespace` is the parsed config; `text` its dump as JSON, where setting a value on the loaded
    dump is what setting it on the namespace would give (None where not: each run is dumped)."""

    namespace: Namespace
    text: str | None
    parser: ArgumentParser

    def config(self, values: dict[str, Any]) -> dict[str, Any]:
        """The config of a run of this point, with `values` set, by namespace path."""
        if self.text is None:
            dump = self.parser.dump(with_values(self.namespace, values), skip_none=False, skip_validation=True)
            return yaml.load(dump, Loader=Loader)
        tree = json.loads(self.text)  # a fresh copy
        for path, value in values.items():
            *parents, name = path.split(".")
            node = tree
            for parent in parents:
                node = node[parent]
            node[name] = value
        return tree


class Points:
    """Runs grouped to be parsed once a point. Their seeds are set on the parsed config (`seed_everything`,
    `data.seed`); so is each number drawn for a key `model.X`, `data.X` or `trainer.X` whose argument comes after
    the others (only seeds and such numbers after it: none can override it) and whose option jsonargparse types
    as exactly `int` or `float` (then any such number parses to itself, an int to a float for a float; a
    constrained type such as a Literal or a PositiveFloat could refuse one). The first run of a point is parsed
    with its numbers, which must come out as set, in the dump too: if not, its draws are parsed one by one."""

    def __init__(self, parser: ArgumentParser) -> None:
        self.parser, self.hints = parser, option_types(parser)
        self.parsed: dict[tuple, Namespace] = {}
        self.points: dict[tuple, Point | None] = {}

    def of(self, run: Run) -> tuple[Point, dict[str, Any]]:
        """The run's point and the values to set on its config, by namespace path."""
        numbers = drawn_numbers(run)
        point = self.point(run, numbers)
        if point is None:
            numbers, point = {}, self.point(run, {})
        return point, seeded(run, {path: self.number(point.namespace, key, numbers[key])
                                   for key, path in paths(numbers).items()})

    def point(self, run: Run, numbers: dict[str, Any]) -> Point | None:
        skip = {*seed_args(run), *(as_arg(k, v) for k, v in numbers.items())}
        key = (*(arg for arg in run.argv if arg not in skip), *((k, type(v)) for k, v in numbers.items()))
        if key not in self.points:
            self.points[key] = self.new_point(run, numbers)
        return self.points[key]

    def new_point(self, run: Run, numbers: dict[str, Any]) -> Point | None:
        config = self.parse(run)
        values = {path: self.number(config, key, numbers[key]) for key, path in paths(numbers).items()}
        if not all(same(config.get(path), value) for path, value in values.items()):
            return None
        values = seeded(run, values)
        dump = self.parser.dump(with_values(config, values), skip_none=False, skip_validation=True)
        tree = yaml.load(dump, Loader=Loader)
        if not all(same(leaf(tree, path), value) for path, value in values.items()):
            return None if numbers else Point(config, None, self.parser)
        # An anchor (`&`) is an object met twice, in which setting one value would set both.
        return Point(config, None if "&" in dump else json.dumps(tree), self.parser)

    def parse(self, run: Run) -> Namespace:
        seeds = seed_args(run)
        key = tuple(arg for arg in run.argv if arg not in seeds)
        if key not in self.parsed:
            self.parsed[key] = self.parser.parse_args(run.argv)
        return self.parsed[key]

    def number(self, config: Namespace, key: str, value: int | float) -> int | float | None:
        """`value` as parsing `--key=value` gives it, where its option's type says (else None)."""
        prefix, name = key.split(".")
        class_path = config.get(f"{prefix}.class_path")
        hints = self.hints if prefix == "trainer" else class_hints(class_path) if isinstance(class_path, str) else {}
        hint = hints.get(key if prefix == "trainer" else name)
        if hint is float:
            return float(value)
        return value if hint is int and type(value) is int else None


def leaf(tree: Any, path: str) -> Any:
    for name in path.split("."):
        if not isinstance(tree, dict) or name not in tree:
            return None
        tree = tree[name]
    return tree


def same(a: Any, b: Any) -> bool:
    """Equal and of one type, and a number: YAML writes a number of one type as itself, whatever its value."""
    return type(a) is type(b) and type(a) in (int, float) and a == b


def drawn_numbers(run: Run) -> dict[str, int | float]:
    """The run's drawn numbers, by key, that may be set on a parsed config: finite numbers drawn for a key
    `model.X`, `data.X` or `trainer.X` (`data.seed` aside), each given once, as the last arguments but the seeds."""
    seeds = seed_args(run)
    args = [arg for arg in run.argv if arg not in seeds]
    drawn = {as_arg(key, value): (key, value) for key, value in run.hparams.items()}
    numbers: dict[str, int | float] = {}
    for arg in reversed(args):
        key, value = drawn.get(arg, ("", None))
        prefix, _, name = key.partition(".")
        if (type(value) not in (int, float) or not math.isfinite(value) or prefix not in NUMBER_KEYS
                or not name.isidentifier() or key == "data.seed" or args.count(arg) > 1):
            break
        numbers[key] = value
    return numbers


def paths(numbers: dict[str, Any]) -> dict[str, str]:
    """Each number's key and its namespace path: `model.X` is `model.init_args.X` (subclass mode), `data.X` too."""
    return {key: key if key.startswith("trainer.") else key.replace(".", ".init_args.") for key in numbers}


def seed_args(run: Run) -> tuple[str, str]:
    return f"--seed_everything={run.seed}", f"--data.seed={run.seed}"


def seeded(run: Run, values: dict[str, Any]) -> dict[str, Any]:
    """The values to set on a run's parsed config, by namespace path: its seeds (as `seed_args` give them), then
    `values`."""
    return {"seed_everything": run.seed, "data.init_args.seed": run.seed, **values}


def with_values(config: Namespace, values: dict[str, Any]) -> Namespace:
    """A copy of `config` with `values` set, by namespace path."""
    config = config.clone()
    for path, value in values.items():
        config[path] = value
    return config


@cache
def class_hints(class_path: str) -> dict[str, Any]:
    """The type hints jsonargparse gives the arguments of this class (an environment, a baseline)."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(load(class_path), fail_untyped=False)
    return option_types(parser)


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

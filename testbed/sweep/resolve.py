"""Resolving a sweep's runs: each run's config as `testbed fit` would resolve it, its id (a hash of it and of
its parent's id, in stages), and every check that needs the classes (environments, models, the Trainer) done
once per distinct configuration, before anything runs or is written.
"""

import copy
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


def identify(runs: list[Run]) -> None:
    """Resolve each run's config and set its id to a hash of it. Every distinct environment and model
    configuration (seeds aside) is also instantiated once (cheap for most environments, which generate data in
    `setup`; a WILDS environment reads its metadata), so a bad key or value fails before anything runs.

    Runs that differ only in their seeds and drawn numbers (`Groups`) are parsed and dumped by jsonargparse once
    (a parse costs ~50 ms, a dump ~15 ms), each run then given its own numbers: the ids and configs of a parse
    and two dumps per run (tests/test_sweep_identify.py), 3-4x faster for the quickstart's 252 runs."""
    parser = resolver()
    groups, checked, trainers = Groups(parser), set(), set()
    for run in runs:
        group, values = groups.of(run)
        for name in ("optimizer", "lr_scheduler"):
            if group.config.get(name) is not None:
                raise ConfigError(f"{name}: not supported in sweeps; a baseline's optimiser is set by model.lr and "
                                  "model.weight_decay")
        text, run.config = group.dump(parser, values)
        run.id = hashlib.sha1(text.encode()).hexdigest()[:12]
        # Seeds change no check: each environment and model configuration is built once, not once per seed.
        data = {**run.config["data"], "init_args": {k: v for k, v in run.config["data"]["init_args"].items()
                                                     if k != "seed"}}
        classes = json.dumps([run.config["model"], data], sort_keys=True)
        if classes not in checked:
            parser.instantiate_classes(group.namespace(values))
            checked.add(classes)
        trainer = json.dumps(run.config["trainer"], sort_keys=True)
        if trainer not in trainers:
            check_trainer(run.config["trainer"])
            trainers.add(trainer)


# jsonargparse dumps YAML with `yaml.safe_dump(config, **DUMP)`; `Template` checks that it gets the same text.
DUMP = {"default_flow_style": False, "allow_unicode": True, "sort_keys": False}
DUMPERS = (getattr(yaml, "CSafeDumper", yaml.SafeDumper), yaml.SafeDumper)  # libyaml's first: ~10x faster
NUMBER_KEYS = ("model", "data", "trainer")  # a drawn number for `model.X`, `data.X` or `trainer.X` can be set


@dataclass
class Template:
    """A dump of one config, loaded back, that gives the dump of a config differing from it only in some numbers
    (by namespace path) without jsonargparse: those numbers are set in the tree, which is dumped as jsonargparse
    dumps (its YAML settings; the same text for this tree, checked), under the same header."""

    head: str
    tree: dict[str, Any]
    dumper: type
    kinds: dict[str, type]  # the type of each value set, by path

    def fits(self, values: dict[str, Any]) -> bool:
        return {path: type(value) for path, value in values.items()} == self.kinds

    def fill(self, values: dict[str, Any]) -> dict[str, Any]:
        for path, value in values.items():
            *parents, name = path.split(".")
            node = self.tree
            for parent in parents:
                node = node[parent]
            node[name] = value
        return self.tree

    def text(self, values: dict[str, Any]) -> str:
        return self.head + yaml.dump(self.fill(values), Dumper=self.dumper, **DUMP)


def template(text: str, values: dict[str, Any]) -> Template | None:
    """The template of `text`, jsonargparse's dump of a config holding `values`, or None where it could differ
    from jsonargparse's: a value not in the dump as itself (a None skipped, a number dumped as another type),
    an anchor (`&`: an object met twice, which setting one value would change in both places), or a tree whose
    dump is not the text."""
    tree = yaml.load(text, Loader=Loader)
    if "&" in text or not all(same(leaf(tree, path), value) for path, value in values.items()):
        return None
    for dumper in DUMPERS:
        body = yaml.dump(tree, Dumper=dumper, **DUMP)
        head = text[:len(text) - len(body)]
        if text.endswith(body) and all(line.startswith("#") for line in head.splitlines()):
            return Template(head, tree, dumper, {path: type(value) for path, value in values.items()})
    return None


def leaf(tree: Any, path: str) -> Any:
    for name in path.split("."):
        if not isinstance(tree, dict) or name not in tree:
            return None
        tree = tree[name]
    return tree


def same(a: Any, b: Any) -> bool:
    """Equal and of one type, and a number: YAML writes a number of one type as itself, whatever its value."""
    return type(a) is type(b) and type(a) in (int, float) and a == b


@dataclass
class Group:
    """Runs that parse to one config (`config`, the first run's) but for some numbers: their seeds and the
    numbers drawn for them (`Groups.of`). `ids` and `configs` are templates of the first run's two dumps."""

    config: Namespace
    ids: Template | None
    configs: Template | None

    def namespace(self, values: dict[str, Any]) -> Namespace:
        return with_values(self.config, values)

    def dump(self, parser: ArgumentParser, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The run's id text (its dump without None values) and its config (the dump with them, loaded)."""
        if self.ids and self.configs and self.ids.fits(values) and self.configs.fits(values):
            return self.ids.text(values), copy.deepcopy(self.configs.fill(values))
        config = self.namespace(values)
        text = parser.dump(config, skip_validation=True)
        return text, yaml.load(parser.dump(config, skip_none=False, skip_validation=True), Loader=Loader)


class Groups:
    """Runs grouped to be parsed once a group. Their seeds are set on the parsed config (`seed_everything`,
    `data.seed`); so is each number drawn for a key `model.X`, `data.X` or `trainer.X` whose argument comes after
    the others (only seeds and such numbers after it: none can override it) and whose option jsonargparse types
    as exactly `int` or `float` (then any such number parses to itself, an int to a float for a float; a
    constrained type such as a Literal or a PositiveFloat could refuse one). The first run of a group is parsed
    with its numbers, which must come out as set: if not, its draws are parsed one by one."""

    def __init__(self, parser: ArgumentParser) -> None:
        self.parser, self.hints = parser, option_types(parser)
        self.parsed: dict[tuple, Namespace] = {}
        self.groups: dict[tuple, Group | None] = {}

    def of(self, run: Run) -> tuple[Group, dict[str, Any]]:
        """The run's group and the values to set on its config, by namespace path."""
        numbers = drawn_numbers(run)
        group = self.group(run, numbers)
        if group is None:
            numbers, group = {}, self.group(run, {})
        return group, seeded(run, {path: self.number(group.config, key, numbers[key])
                                   for key, path in paths(numbers).items()})

    def group(self, run: Run, numbers: dict[str, Any]) -> Group | None:
        skip = {*seed_args(run), *(as_arg(k, v) for k, v in numbers.items())}
        key = (*(arg for arg in run.argv if arg not in skip), *((k, type(v)) for k, v in numbers.items()))
        if key not in self.groups:
            self.groups[key] = self.new_group(run, numbers)
        return self.groups[key]

    def new_group(self, run: Run, numbers: dict[str, Any]) -> Group | None:
        config = self.parse(run)
        values = {path: self.number(config, key, numbers[key]) for key, path in paths(numbers).items()}
        if not all(same(config.get(path), value) for path, value in values.items()):
            return None
        values = seeded(run, values)
        first = with_values(config, values)
        texts = self.parser.dump(first, skip_validation=True), self.parser.dump(first, skip_none=False,
                                                                                   skip_validation=True)
        return Group(config, template(texts[0], values), template(texts[1], values))

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

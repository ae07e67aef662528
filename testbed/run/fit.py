"""Fitting one resolved run, as sweep workers do: no LightningCLI per run.

A sweep resolves and checks every run's config once, up front (`testbed.sweep.resolve`). Parsing it again in
the worker, dumping it and instantiating through jsonargparse cost several times what a tiny run's training
does. Here each class is imported and called with its resolved arguments, the environment's shape is linked
into the model as TestbedCLI links it, and `config.yaml`, `metrics.csv` and `results.json` come out as
`testbed fit` writes them (tests/test_fast_paths.py checks that the files are identical).
"""

import importlib
import time
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from testbed.envs.base import ShiftedEnv
from testbed.envs.contract import check_contract
from testbed.files import write_atomic
from testbed.training.compat import given_hyperparameters
from testbed.training.module import MODEL_LINKS, Baseline
from testbed.training.results import finish_fit

# The keys of a `fit` config that are not arguments of `Trainer.fit` (LightningCLI's optimiser keys are refused
# by `testbed.sweep.resolve.identify`).
NOT_FIT_ARGS = ("seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler")


def load(class_path: str) -> type:
    module, name = class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def instantiate(value: Any) -> Any:
    """`value` with every `{class_path, init_args}` in it replaced by that object (a logger, callbacks)."""
    if isinstance(value, dict) and "class_path" in value:
        return load(value["class_path"])(**{k: instantiate(v) for k, v in value.get("init_args", {}).items()})
    if isinstance(value, list):
        return [instantiate(v) for v in value]
    return value


def instantiate_module(spec: dict[str, Any], **links: Any) -> Any:
    """The model or environment of a `{class_path, init_args}` spec. Its hyperparameters are recorded as
    LightningCLI records them (the resolved arguments and `_class_path`): hparams.yaml and checkpoints match."""
    hparams = {"_class_path": spec["class_path"], **spec["init_args"], **links}
    with given_hyperparameters(hparams=hparams, instantiator="lightning.pytorch.cli.instantiate_module"):
        return load(spec["class_path"])(**spec["init_args"], **links)


def config_text(config: dict[str, Any]) -> str:
    """`config` as LightningCLI saves config.yaml: jsonargparse's YAML style under Lightning's version line
    (through libyaml where PyYAML has it: the same text, 4x faster)."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    body = yaml.dump(config, Dumper=dumper, default_flow_style=False, allow_unicode=True, sort_keys=False)
    return f"# lightning.pytorch=={L.__version__}\n{body}"


def build(config: dict[str, Any]) -> tuple[int, ShiftedEnv, Baseline, L.Trainer]:
    """Seed, then build the environment, the model and the Trainer of a resolved config; write config.yaml."""
    seed = config["seed_everything"]
    L.seed_everything(seed, workers=True)
    env = instantiate_module(config["data"])
    model = instantiate_module(config["model"], **{name: getattr(env, name) for name in MODEL_LINKS})
    check_contract(env)
    model.check_env(env)
    trainer = L.Trainer(**{key: instantiate(value) for key, value in config["trainer"].items()})
    model.check_trainer(trainer)
    if trainer.is_global_zero:
        write_atomic(Path(trainer.log_dir) / "config.yaml", config_text(config))
    return seed, env, model, trainer


def fit_resolved(config: dict[str, Any]) -> Path:
    """Do what `testbed fit` does for this resolved `fit` config (the dump of `testbed.cli.lightning.resolver`, with an
    integer `seed_everything`): seed, build, fit, test, and write the run's files; returns results.json."""
    seed, env, model, trainer = build(config)
    fit_args = {k: v for k, v in config.items() if k not in NOT_FIT_ARGS}  # `ckpt_path` and, in recent Lightning, more
    start = time.perf_counter()
    trainer.fit(model, datamodule=env, **fit_args)
    return finish_fit(trainer, model, env, seed, time.perf_counter() - start)

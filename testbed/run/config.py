"""The `fit` config: LightningCLI's parser as testbed configures it (the environment's shape linked into the model,
testbed's Trainer defaults), for `testbed fit` and for the sweep, which resolves its runs with the same parser.

Importing it registers every environment and baseline, so that `--model=ERM` and `--data=SpuriousShapes` resolve.
"""

from functools import partial

from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningCLI

import testbed.baselines  # noqa: F401  (importing registers the baselines for --model)
import testbed.envs  # noqa: F401  (and the environments for --data)
from testbed.envs.base import ShiftedEnv
from testbed.envs.contract import check_declared
from testbed.training.compat import subcommand_parser
from testbed.training.module import MODEL_LINKS, Baseline
from testbed.training.trainer import FIT_DEFAULTS


class FitConfig(LightningCLI):
    """LightningCLI with `fit`, `validate` and `test`, and the environment's shape linked into the model."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {k: v for k, v in LightningCLI.subcommands().items() if k in ("fit", "validate", "test")}

    def add_arguments_to_parser(self, parser) -> None:
        for name in MODEL_LINKS:  # through the contract's check, so that a plug-in missing one is told which
            parser.link_arguments("data", f"model.init_args.{name}", compute_fn=partial(declared, name=name),
                                  apply_on="instantiate")


def declared(env: ShiftedEnv, name: str) -> object:
    check_declared(env)
    return getattr(env, name)


def subclass_names(base: type) -> list[str]:
    """The built-in subclasses of `base` (plug-ins are named by import path)."""
    found, todo = [], list(base.__subclasses__())
    while todo:
        cls = todo.pop()
        found += [cls.__name__] if cls.__module__.startswith("testbed.") else []
        todo += cls.__subclasses__()
    return sorted(found)


CLI_KWARGS = dict(model_class=Baseline, datamodule_class=ShiftedEnv, subclass_mode_model=True,
                  subclass_mode_data=True, trainer_defaults=FIT_DEFAULTS, seed_everything_default=0,
                  save_config_kwargs={"overwrite": True}, parser_kwargs={"exit_on_error": False})


def resolver() -> ArgumentParser:
    """The `fit` parser: resolves a run's arguments (without the subcommand) to the full config that `fit`
    saves as config.yaml, cheaply."""
    return subcommand_parser(FitConfig, "fit", ["--model=ERM", "--data=SpuriousShapes"], **CLI_KWARGS)

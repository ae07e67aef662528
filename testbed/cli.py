"""The `testbed` command: LightningCLI `fit`, `validate` and `test`, the model-free `sweep`, `collect`, `plot`
and `report` (testbed/tools.py), `show` (testbed/show.py), and one-line errors for bad input.

Quiet by default: each run prints its progress and a summary table; `--verbose` brings Lightning's own messages
and warnings back."""

import json
import logging
import re
import sys
import time
import warnings
from pathlib import Path

from jsonargparse import ArgumentError, ArgumentParser
from lightning import Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI

import testbed.baselines  # noqa: F401  (importing registers the baselines for --model)
import testbed.envs  # noqa: F401  (and the environments for --data)
from testbed.envs.base import ShiftedEnv
from testbed.errors import ConfigError
from testbed.hf import check_tokenizer
from testbed.module import Baseline
from testbed.progress import EpochProgress
from testbed.results import finish_fit, write_results
from testbed.table import run_table
from testbed.tools import TOOLS

warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # sweeps give argv on purpose
warnings.filterwarnings("ignore", message="Experiment logs directory")  # a sweep run's folder has run.json
# Known to be harmless here (`--verbose` shows them again): Lightning's own use of a deprecated torch name, and
# its advice to log more often than once per epoch, which Baseline does on purpose (testbed/module.py).
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
warnings.filterwarnings("ignore", message="The number of training batches")
warnings.filterwarnings("ignore", message="The dirpath has changed from")  # `test` of a checkpoint writes a new version

TRAINER_DEFAULTS = {
    "max_epochs": 10,
    "num_sanity_val_steps": 0,
    "enable_model_summary": False,
    "log_every_n_steps": 10,
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
}
# The environment's attributes that become the model's init arguments of the same name.
MODEL_LINKS = ("n_classes", "input_shape", "vocab_size")
# Lightning's messages that say nothing to a user of this tool: advertising, and the absence of accelerators.
NOISE = ("💡 Tip", "GPU available: False", "TPU available: False", "HPU available: False", "`Trainer.fit` stopped",
         "Restoring states from the checkpoint path")


class QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE)


def quiet(verbose: bool) -> None:
    """Drop Lightning's known noise (or, `verbose`, show every warning again, once per place)."""
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)  # no "Seed set to 0"
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    for f in [f for f in rank_zero.filters if isinstance(f, QuietFilter)]:
        rank_zero.removeFilter(f)
    if verbose:  # also undo a quiet sweep worker's levels, in this process (testbed.executors)
        for name in ("lightning.pytorch", "lightning.fabric", "lightning.fabric.utilities.seed"):
            logging.getLogger(name).setLevel(logging.INFO)
        warnings.simplefilter("default")
    else:
        rank_zero.addFilter(QuietFilter())


class TestbedCLI(LightningCLI):
    """Links the environment's shape into the model; after `fit` it tests and writes `results.json`; each command
    ends with a table of what the run found."""

    verbose = False  # Lightning's own progress bar instead of EpochProgress

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {k: v for k, v in LightningCLI.subcommands().items() if k in ("fit", "validate", "test")}

    def add_arguments_to_parser(self, parser) -> None:
        for name in MODEL_LINKS:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def _seed(self) -> int | None:
        seed = self.config[self.subcommand].get("seed_everything")
        return None if isinstance(seed, bool) else seed

    def instantiate_trainer(self, **kwargs) -> Trainer:
        # Check the model against the environment before the trainer prints anything: an error stays one line.
        check_tokenizer(self.model.hparams.arch, getattr(self.datamodule, "tokenizer", None))
        self.model.check_env(self.datamodule)
        return super().instantiate_trainer(**kwargs)

    def _instantiate_trainer(self, config: dict, callbacks: list) -> Trainer:
        """Adds EpochProgress unless verbose, the progress bar is off, or the user gave a progress bar callback."""
        own = config.get("callbacks") or []
        given = (own if isinstance(own, list) else [own]) + callbacks
        if not self.verbose and config.get("enable_progress_bar") is not False and not any(
                isinstance(c, ProgressBar) for c in given):
            callbacks = [*callbacks, EpochProgress()]
        return super()._instantiate_trainer(config, callbacks)

    def _started(self) -> None:
        self._start = time.perf_counter()

    def _report(self, path: Path, stage: str) -> None:
        if self.trainer.is_global_zero:
            print(f"\n{run_table(json.loads(Path(path).read_text()), stage)}\nresults: {path}", flush=True)

    before_fit = before_validate = before_test = _started

    def after_fit(self) -> None:
        wall = time.perf_counter() - self._start
        self._report(finish_fit(self.trainer, self.model, self.datamodule, self._seed(), wall), "test")

    def after_validate(self) -> None:
        """`validate` writes nothing: its table is built from the validation metrics it logged."""
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        run = {"model": type(self.model).__name__, "data": type(self.datamodule).__name__, "metrics": metrics,
               "params": self.model.n_params, "wall_time_s": time.perf_counter() - self._start}
        if self.trainer.is_global_zero:
            print(f"\n{run_table(run, 'val')}", flush=True)

    def after_test(self) -> None:
        wall = time.perf_counter() - self._start
        self._report(write_results(self.trainer, self.model, self._seed(), wall), "test")


def subclass_names(base: type) -> list[str]:
    """The built-in subclasses of `base` (plug-ins are named by import path)."""
    found, todo = [], list(base.__subclasses__())
    while todo:
        cls = todo.pop()
        found += [cls.__name__] if cls.__module__.startswith("testbed.") else []
        todo += cls.__subclasses__()
    return sorted(found)


def one_line(err: BaseException) -> str:
    """The precise cause of a jsonargparse error, as one line naming the field and what is allowed."""
    chain = [err]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None:
        chain.append(nxt)
    for e in chain:
        if isinstance(e, ConfigError):
            section = "model." if "module.Baseline" in str(err) else "data." if "ShiftedEnv" in str(err) else ""
            return section + str(e)
    keys = [k for e in chain for k in re.findall(r'Parser key "([^"]+)"', str(e))]
    field = ".".join(dict.fromkeys(k for k in keys if k != "config")) or "config"
    cause = " ".join(str(chain[-1]).split())
    section = keys[0] if keys else ""
    if m := re.search(r"Expected a dot import path string: (\S+)", cause):
        base, kind = (Baseline, "baseline") if section == "model" else (ShiftedEnv, "environment")
        return (f"{section}: unknown {kind} {m.group(1)!r}; choose one of {', '.join(subclass_names(base))}"
                " or give an import path such as mypackage.MyClass")
    if m := re.search(r"Expected a typing.Literal\[(.*)\]. Got value: (.*)", cause):
        allowed = m.group(1).replace("'", "")
        return f"{field}: {m.group(2)!r} is not allowed; choose one of {allowed}"
    if m := re.search(r"Option '([^']+)' is not accepted", " ".join(str(err).split())):
        return f"{section}.{m.group(1)}: unknown option"
    return f"{field}: {cause}" if keys else cause


def fail(message: str) -> None:
    print(f"testbed: error: {message}", file=sys.stderr)
    sys.exit(2)


USAGE = """usage: testbed COMMAND [options]    (testbed COMMAND --help for each)

train and evaluate (LightningCLI):
  fit       train a baseline on an environment, then test it and write results.json
  validate  evaluate on the validation environments
  test      evaluate a checkpoint on every environment and write results.json
study scaling:
  sweep     run baselines x scales x seeds from a sweep YAML, resumably (local, worker processes or Ray)
  collect   gather a sweep's runs into one tidy table (results.csv)
  plot      draw a sweep's scaling curves (figures/*.png, *.pdf)
  report    write report.md: a verdict per regime and baseline from saturating fits with bootstrap intervals
look at the data:
  show      draw samples of each sub-environment with y, a and their counterfactuals (PNG; text for vectors)

fit, validate and test print one line per epoch (a bar on a terminal) and a table of the results;
--verbose shows Lightning's own messages and warnings too."""


CLI_KWARGS = dict(model_class=Baseline, datamodule_class=ShiftedEnv, subclass_mode_model=True,
                  subclass_mode_data=True, trainer_defaults=TRAINER_DEFAULTS, seed_everything_default=0,
                  save_config_kwargs={"overwrite": True}, parser_kwargs={"exit_on_error": False})


def lightning_cli(argv: list[str], verbose: bool = False) -> TestbedCLI:
    """Run `fit`, `validate` or `test` with these arguments; errors are raised, not printed."""
    TestbedCLI.verbose = verbose
    return TestbedCLI(**CLI_KWARGS, args=argv)


class _ParseOnly(TestbedCLI):
    def instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def resolver() -> ArgumentParser:
    """The `fit` parser: resolves a run's arguments (without the subcommand) to the full config that `fit`
    saves as config.yaml, cheaply."""
    return _ParseOnly(**CLI_KWARGS, args=["fit", "--model=ERM", "--data=SpuriousShapes"])._subcommand_parsers["fit"]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    quiet(verbose)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    try:
        if argv[0] in TOOLS:
            TOOLS[argv[0]](argv[1:])
        elif argv[0] == "show":
            from testbed.show import show

            show(argv[1:])
        else:
            # `validate` and `test` print Lightning's metric table only when asked to: testbed prints its own.
            lightning_cli(argv + ["--verbose=false"] if argv[0] in ("validate", "test") and not verbose else argv,
                          verbose)
    except (ConfigError, ArgumentError) as err:
        fail(one_line(err))
    except ValueError as err:  # jsonargparse wraps errors raised while instantiating classes
        if not any(isinstance(e, ConfigError) for e in (err.__cause__, err.__context__)):
            raise
        fail(one_line(err))

"""The `testbed` command: LightningCLI `fit`, `validate` and `test`, the model-free `sweep`, `collect`, `plot`
and `report` (testbed/tools.py), `show` (testbed/show.py), and one-line errors for bad input.

Quiet by default: each run prints its progress and a summary table; `--verbose` brings Lightning's own messages
and warnings back."""

import inspect
import json
import logging
import re
import sys
import time
import warnings
from pathlib import Path

import yaml
from jsonargparse import ArgumentError, ArgumentParser
from lightning import Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

import testbed.baselines  # noqa: F401  (importing registers the baselines for --model)
import testbed.envs  # noqa: F401  (and the environments for --data)
from testbed.checkpoints import LIGHTNING_NAMES, check_ckpt_path, read_checkpoint
from testbed.compat import subcommand_parser
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
TRAINER_PARAMS = [p for p in inspect.signature(Trainer).parameters]
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
        # EpochProgress unless verbose, the progress bar is off, or the user gave a progress bar callback.
        check_ckpt_path(self.subcommand, self.config[self.subcommand].get("ckpt_path"))
        settings = self.config_init[self.subcommand].get("trainer") or {}
        own = settings.get("callbacks") or []
        own = own if isinstance(own, list) else [own]
        if not self.verbose and settings.get("enable_progress_bar") is not False and not any(
                isinstance(c, ProgressBar) for c in own):
            kwargs["callbacks"] = [*own, EpochProgress()]
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except ConfigError:
            raise
        except (MisconfigurationException, ValueError, TypeError, ImportError) as err:  # Lightning refuses them
            raise ConfigError(trainer_error(err)) from None
        check_run_folder(Path(trainer.log_dir))
        return trainer

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


def trainer_error(err: BaseException) -> str:
    """Lightning's refusal of a Trainer setting as one line, naming the setting its message names first (or the
    accelerator, where hardware or its library is missing)."""
    message = " ".join(str(err).split())
    found = {m.start(): p for p in TRAINER_PARAMS if (m := re.search(rf"\b{p}\b", message))}
    field = found[min(found)] if found else (
        "accelerator" if re.search(r"gpu|cuda|mps|tpu|xla|hpu|backend", message, re.IGNORECASE) else "")
    return f"trainer{'.' + field if field else ''}: {message}"


def check_run_folder(folder: Path) -> None:
    """The run's folder can be made: no file stands where it or one of its parents must be a folder."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"trainer.logger: the run folder {folder} cannot be made: {parent} is a file, "
                                  "not a folder; give another save_dir or default_root_dir")
            return


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
    if m := re.fullmatch(r"Expected a <class '(int|float)'>. Got value: (.*)", cause):
        kind = "an integer" if m.group(1) == "int" else "a finite number"
        return f"{field}: {m.group(2)!r} is not allowed; give {kind}"
    if m := re.search(r"Expected a typing.Literal\[(.*)\]. Got value: (.*)", cause):
        allowed = m.group(1).replace("'", "")
        return f"{field}: {m.group(2)!r} is not allowed; choose one of {allowed}"
    if m := re.search(r"Option '([^']+)' is not accepted", " ".join(str(err).split())):
        return f"{section}.{m.group(1)}: unknown option"
    return f"{field}: {cause}" if keys else cause


def option_values(argv: list[str], *names: str) -> list[str]:
    """The values given to these options, as `--name value` or `--name=value`."""
    values = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in names:
            values += [value] if eq else argv[i + 1:i + 2]
    return values


def check_files(argv: list[str]) -> None:
    """The `-c` config files and the `--ckpt_path` of a LightningCLI command, checked before LightningCLI reads
    them, so that a bad one is named in one line (LightningCLI's errors leave out the file, or are tracebacks)."""
    for value in option_values(argv, "-c", "--config"):
        if value.lstrip().startswith("{") or "\n" in value:  # a YAML string, not a file
            continue
        path = Path(value)
        if not path.is_file():
            raise ConfigError(f"config: {value!r} {'is a folder' if path.is_dir() else 'does not exist'}; "
                              "give a YAML file")
        try:
            content = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"config: {value} is not valid YAML: {' '.join(str(err).split())}") from None
        if not isinstance(content, dict):
            what = "empty" if content is None else f"a {type(content).__name__}"
            raise ConfigError(f"config: {value} is {what}; give a YAML mapping of options (model:, data:, trainer:)")
    for value in option_values(argv, "--ckpt_path"):
        if value not in LIGHTNING_NAMES and value not in ("null", "None"):
            read_checkpoint("ckpt_path", value)


def fail(message: str) -> None:
    print(f"testbed: error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever the message
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


def resolver() -> ArgumentParser:
    """The `fit` parser: resolves a run's arguments (without the subcommand) to the full config that `fit`
    saves as config.yaml, cheaply."""
    return subcommand_parser(TestbedCLI, "fit", ["--model=ERM", "--data=SpuriousShapes"], **CLI_KWARGS)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    quiet(verbose)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    commands = ["fit", "validate", "test", *TOOLS, "show"]
    if argv[0] not in commands:
        fail(f"command: {argv[0]!r} is not allowed; choose one of {', '.join(commands)} (testbed --help)")
    try:
        if argv[0] in TOOLS:
            TOOLS[argv[0]](argv[1:])
        elif argv[0] == "show":
            from testbed.show import show

            show(argv[1:])
        else:
            check_files(argv)
            # `validate` and `test` print Lightning's metric table only when asked to: testbed prints its own.
            lightning_cli(argv + ["--verbose=false"] if argv[0] in ("validate", "test") and not verbose else argv,
                          verbose)
    except (ConfigError, ArgumentError) as err:
        fail(one_line(err))
    except ValueError as err:  # jsonargparse wraps errors raised while instantiating classes
        if not any(isinstance(e, ConfigError) for e in (err.__cause__, err.__context__)):
            raise
        fail(one_line(err))

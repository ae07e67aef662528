"""The Lightning side of the `testbed` command: LightningCLI's `fit`, `validate` and `test` as testbed runs them
(results written after `fit`, a summary table), and the checks that run before LightningCLI reads anything. The
config they parse is `testbed.run.config`'s.

Quiet by default: each run prints its progress and a summary table; `--verbose` brings Lightning's own messages
and warnings back. The entry point is `testbed.cli.main`."""

import json
import time
from pathlib import Path

import yaml
from lightning import Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from testbed.cli.progress import EpochProgress
from testbed.cli.table import run_table
from testbed.envs.contract import check_contract
from testbed.errors import ConfigError
from testbed.run.config import CLI_KWARGS, FitConfig
from testbed.training.checkpoints import LIGHTNING_NAMES, check_ckpt_path, read_checkpoint
from testbed.training.hf import check_tokenizer
from testbed.training.results import finish_fit, write_results
from testbed.training.trainer import check_run_folder, trainer_error


class TestbedCLI(FitConfig):
    """`testbed fit`, `validate` and `test`: after `fit` it tests and writes `results.json`; each command ends with
    a table of what the run found."""

    verbose = False  # Lightning's own progress bar instead of EpochProgress

    def _seed(self) -> int | None:
        seed = self.config[self.subcommand].get("seed_everything")
        return None if isinstance(seed, bool) else seed

    def instantiate_trainer(self, **kwargs) -> Trainer:
        # Check the model against the environment before the trainer prints anything: an error stays one line.
        check_tokenizer(self.model.hparams.arch, getattr(self.datamodule, "tokenizer", None))
        check_contract(self.datamodule)
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
        self.model.check_trainer(trainer)
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


def lightning_cli(argv: list[str], verbose: bool = False) -> TestbedCLI:
    """Run `fit`, `validate` or `test` with these arguments; errors are raised, not printed."""
    TestbedCLI.verbose = verbose
    return TestbedCLI(**CLI_KWARGS, args=argv)

"""Lightning's private names that testbed uses (testbed/training/compat.py) exist in the installed Lightning, and no
other file uses one."""

from pathlib import Path

import lightning

from testbed.training import compat


def test_every_private_lightning_name_testbed_relies_on_exists():
    gone = compat.missing()
    assert not gone, (f"lightning {lightning.__version__} no longer has {', '.join(gone)}: adapt "
                      "testbed/training/compat.py, or install a version that setup.cfg allows")


def test_a_missing_name_is_reported(monkeypatch):
    monkeypatch.delattr(compat.hparams_mixin, "_given_hyperparameters_context")
    assert compat.missing() == ["lightning.pytorch.core.mixins.hparams_mixin._given_hyperparameters_context"]


# Every private (or mid-fit mutated) name of Lightning, torch and jsonargparse that testbed touches. Each must
# appear only in compat.py, where its use says why and `missing()` checks that the installed versions have it.
PRIVATE = ("_given_hyperparameters_context", "_run_subcommand", "_subcommand_parsers", "_instantiate_trainer",
           "epoch_progress", "optim_progress", "epoch_loop", "_typehint", "_evaluate_stopping_criteria",
           "fit_loop", "reload_dataloaders_every_n_epochs", ".datamodule =", "datamodule.trainer", "env.trainer",
           "_compiled_call_impl", "_actions")


def private_users(root: Path) -> list[str]:
    """The .py files below `root`'s testbed/, envs/ and baselines/ (every folder, recursively) but compat.py that
    name one of PRIVATE."""
    files = [p for folder in ("testbed", "envs", "baselines") for p in (root / folder).rglob("*.py")]
    return sorted(str(p.relative_to(root)) for p in files
                  if p.name != "compat.py" and any(n in p.read_text() for n in PRIVATE))


def test_private_names_appear_only_in_the_compat_module():
    root = Path(compat.__file__).resolve().parents[2]
    assert (root / "testbed/sweep").is_dir() and (root / "testbed/training/compat.py").is_file()
    assert not private_users(root), f"private names outside testbed/training/compat.py: {private_users(root)}"


def test_a_private_name_in_a_nested_folder_is_found(tmp_path):
    for folder in ("testbed/run", "envs", "baselines"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "testbed/run/deep.py").write_text("min = trainer.fit_loop.min_steps\n")
    (tmp_path / "baselines/ok.py").write_text("x = 1\n")
    assert private_users(tmp_path) == ["testbed/run/deep.py"]

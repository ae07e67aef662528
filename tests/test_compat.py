"""Lightning's private names that testbed uses (testbed/training/compat.py) exist in the installed Lightning."""

import lightning

from testbed.training import compat


def test_every_private_lightning_name_testbed_relies_on_exists():
    gone = compat.missing()
    assert not gone, (f"lightning {lightning.__version__} no longer has {', '.join(gone)}: adapt "
                      "testbed/training/compat.py, or install a version that setup.cfg allows")


def test_a_missing_name_is_reported(monkeypatch):
    monkeypatch.delattr(compat.hparams_mixin, "_given_hyperparameters_context")
    assert compat.missing() == ["lightning.pytorch.core.mixins.hparams_mixin._given_hyperparameters_context"]


def test_private_lightning_names_appear_only_in_the_compat_module():
    from pathlib import Path

    names = ("_given_hyperparameters_context", "_run_subcommand", "_subcommand_parsers", "_instantiate_trainer",
             "epoch_progress", "optim_progress", "epoch_loop", "_typehint")
    root = Path(compat.__file__).resolve().parents[1]
    files = [p for folder in ("testbed", "envs", "baselines") for p in (root / folder).glob("*.py")]
    users = sorted(str(p.relative_to(root)) for p in files
                   if p.name != "compat.py" and any(n in p.read_text() for n in names))
    assert not users, f"private Lightning names outside testbed/training/compat.py: {users}"

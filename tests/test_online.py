"""Online: passive and interventional learning in a confounded deployment stream."""

import lightning as L
import pytest
import torch
from conftest import CONFIGS, QUIET, results, run_cli

from testbed.baselines import Online
from testbed.envs import Batch, SpuriousShapes
from testbed.errors import ConfigError

CONFOUNDED = str(CONFIGS / "envs" / "confounded.yaml")
ONLINE = str(CONFIGS / "baselines" / "online.yaml")
FAST = [*QUIET, "--data.image_size=14", "--data.n_val=1000", "--data.n_test=1000"]


def test_interventions_remove_the_reliance_that_passive_online_learning_keeps(workdir):
    """An ERM model deployed in the confounded stream keeps learning: passively it stays on the colour;
    intervening on the colour of its queries brings it to the Oracle trained on as many samples."""
    run_cli("fit", "-c", CONFOUNDED, "-c", str(CONFIGS / "baselines" / "erm.yaml"), *FAST, "--trainer.max_epochs=3")
    (ckpt,) = (workdir / "runs/lightning_logs/version_0/checkpoints").glob("*.ckpt")
    for mode in ("passive", "interventional"):  # target: below the Oracle's shifted accuracy on these samples
        run_cli("fit", "-c", CONFOUNDED, "-c", ONLINE, *FAST, f"--model.mode={mode}", f"--model.init_ckpt={ckpt}",
                "--model.target_acc=0.6")
    run_cli("fit", "-c", CONFOUNDED, "-c", str(CONFIGS / "baselines" / "oracle.yaml"), *FAST, "--trainer.max_epochs=4")
    erm, passive, active, oracle = (results(workdir / f"runs/lightning_logs/version_{i}") for i in range(4))
    rev, rel = "test/ood:corr=0.10/acc", "test/spurious_reliance"
    assert erm["metrics"][rel] >= 0.8
    assert active["train_samples"] == passive["train_samples"] == oracle["train_samples"] == 40000
    assert passive["metrics"][rel] >= 0.7 and passive["metrics"][rev] <= 0.3
    assert passive["online"]["samples_to_target"] is None
    assert active["metrics"][rel] <= 0.15
    assert abs(active["metrics"][rev] - oracle["metrics"][rev]) <= 0.07
    curve = active["online"]["curve"]
    assert curve[0] == {"samples": 0, "shifted_acc": pytest.approx(erm["metrics"]["test/acc_worst_env"])}
    assert curve[-1]["samples"] == 40000
    assert curve[-1]["shifted_acc"] == pytest.approx(active["metrics"]["test/acc_worst_env"])
    assert 0 < active["online"]["samples_to_target"] <= 40000
    # Prequential accuracy on the confounded stream: the colour pays there, so the passive learner scores higher.
    assert passive["online"]["curve"][-1]["prequential_acc"] > active["online"]["curve"][-1]["prequential_acc"]


def test_without_a_renderer_online_queries_and_without_query_it_says_what_is_missing():
    env = SpuriousShapes(n_train=512, n_val=64, n_test=64, image_size=8)
    env.interventions = ()  # as a dataset without a renderer
    model = Online(budget=512, input_shape=env.input_shape)
    with pytest.raises(ConfigError, match=r"needs an environment that can set the spurious attribute, by "
                                          r"intervene\(a=...\) or query\(a=...\); SpuriousShapes offers neither"):
        model.check_env(env)
    queried = []

    def query(a: torch.Tensor) -> Batch:
        """Draw, for each requested value, a training sample that has it."""
        queried.append(a)
        pool = env.data[env.names("train")[0]]
        idx = torch.stack([(pool.a == v).nonzero()[0, 0] for v in a.tolist()])
        return Batch(*(t[idx] for t in pool))

    env.query = query
    model.check_env(env)
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model, datamodule=env)
    assert model.total_samples == 512 and sum(len(a) for a in queried) == 512

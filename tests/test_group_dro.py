"""GroupDRO's variants (the generalisation adjustment, group-balanced sampling) on cases with known answers, and
the packed step of GroupDRO and ReWeight against their own sequential training steps."""

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from testbed.baselines import GroupDRO, ReWeight
from testbed.envs import Batch, GaussianGroups
from testbed.run.packed_methods import PackedGroupDRO, PackedReWeight
from testbed.run.packing import pack_key
from testbed.training.compat import attach_for_test


def small_env(seed: int = 0) -> GaussianGroups:
    env = GaussianGroups(d_core=4, d_spu=4, n_train=400, n_val=40, n_test=40, batch_size=64, seed=seed)
    env.setup("fit")
    return env


def attached(model: L.LightningModule, env: GaussianGroups) -> L.LightningModule:
    attach_for_test(model, L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False), env)
    return model


def test_packed_group_dro_and_reweight_give_each_models_own_q_and_loss():
    """Three batches (the last without the minority groups, whose weights must then move by the adjustment alone)
    through each model's own `training_step` and through the packed step of all of them at once."""
    envs = [small_env(0), small_env(1)]
    train = envs[0].train_data
    minority = train.a != train.y
    batches = [Batch(*(t[:64] for t in train)), Batch(*(t[64:128] for t in train)),
               Batch(*(t[~minority][:64] for t in train))]
    cases = [(GroupDRO, [{"eta": 0.01, "adjustment": 0.0}, {"eta": 0.1, "adjustment": 2.0}]),
             (ReWeight, [{}, {}])]
    for cls, args in cases:
        torch.manual_seed(0)
        models = [attached(cls(input_shape=(8,), width=8, **a), env) for a, env in zip(args, envs)]
        for model in models:
            model.on_fit_start()
        packed = PackedGroupDRO if cls is GroupDRO else PackedReWeight
        twins = [cls(input_shape=(8,), width=8, **a) for a in args]
        for twin, model in zip(twins, models):
            twin.net.load_state_dict(model.net.state_dict())
        method = packed(twins, envs)
        for batch in batches:
            sequential = torch.stack([m.training_step(batch, 0) for m in models])
            ce = torch.stack([F.cross_entropy(t.net(batch.x), batch.y, reduction="none") for t in twins])
            both = Batch(batch.x, batch.y.expand(2, -1), batch.a.expand(2, -1), None, None)
            torch.testing.assert_close(method.loss(ce, both), sequential, rtol=1e-6, atol=1e-7)
            if cls is GroupDRO:
                torch.testing.assert_close(method.q, torch.stack([m.q for m in models]), rtol=1e-6, atol=1e-7)
        if cls is GroupDRO:  # the q of a model with eta 0.1 moved, and further than that with eta 0.01
            moved = (method.q - 0.25).abs().sum(1)
            assert moved[1] > 5 * moved[0] > 0
            method.retire(1)
            assert torch.equal(twins[1].q, method.q[1])


def test_the_adjustment_raises_the_weight_of_small_groups_by_c_over_root_n():
    """Equal risks in every group: without the adjustment q stays uniform; with C, one step gives
    q_g proportional to exp(eta C / sqrt(n_g)), so the two minority groups (40 samples each of 400) gain weight."""
    env = small_env()
    counts = torch.bincount(env.group(env.train_data), minlength=4).double()
    assert counts.tolist() == [180, 20, 20, 180]
    batch = Batch(*(t[:64] for t in env.train_data))
    for c in (0.0, 3.0):
        model = attached(GroupDRO(input_shape=(8,), eta=0.5, adjustment=c), env)
        model.on_fit_start()
        torch.nn.init.zeros_(model.net[-1].weight)
        torch.nn.init.zeros_(model.net[-1].bias)  # logits 0: every sample's loss is log 2, every group's risk too
        loss = model.training_step(batch, 0)
        assert loss.item() == pytest.approx(math.log(2), rel=1e-6)
        expected = torch.exp(0.5 * c / counts.sqrt())
        torch.testing.assert_close(model.q.double(), expected / expected.sum(), rtol=1e-5, atol=0)
    assert model.q[1] > 1.1 * model.q[0]


def test_balanced_sampling_serves_each_group_equally_often_and_a_fresh_draw_each_epoch():
    env = GaussianGroups(d_core=4, d_spu=4, n_train=4000, n_val=40, n_test=40, batch_size=500)
    model = GroupDRO(input_shape=(8,), width=8, sampling="balanced")
    seen: list[torch.Tensor] = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            seen.append(env.group(trainer.train_dataloader.data).clone())

    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        limit_val_batches=0, callbacks=[Record()], enable_model_summary=False)
    trainer.fit(model, datamodule=env)
    assert len(seen) == 3 and all(len(g) == 4000 for g in seen)
    for g in seen:  # 90% of the natural data is in the two majority groups; each group is a quarter here
        share = torch.bincount(g, minlength=4) / len(g)
        assert (share - 0.25).abs().max() < 0.03
    assert not torch.equal(seen[0], seen[1])  # a new draw every epoch
    assert env.served is None  # handed back after the fit


def test_balanced_group_dro_is_not_packed():
    config = {"model": {"class_path": "testbed.baselines.GroupDRO",
                        "init_args": {"arch": "mlp", "sampling": "balanced"}},
              "trainer": {"max_epochs": 2, "limit_val_batches": 0, "enable_checkpointing": False,
                          "accelerator": "auto"},
              "data": {"class_path": "testbed.envs.GaussianGroups", "init_args": {"seed": 0}}}
    assert pack_key(config) is None
    config["model"]["init_args"]["sampling"] = "natural"
    assert pack_key(config) is not None

"""JTT's second stage starts from exactly the weights its fit started from, whatever the backbone holds."""

import lightning as L
import torch

from testbed.baselines import JTT
from testbed.envs import SpuriousShapes


def test_the_second_stage_of_a_vit_starts_from_the_initial_weights_including_attention_positions_and_cls():
    """A ViT with a class token: its `nn.MultiheadAttention`, position embeddings and class token have no
    `reset_parameters` of their own, so re-initialising module by module left them warm; the saved initial state
    restores every tensor."""
    torch.manual_seed(0)
    env = SpuriousShapes(image_size=8, n_train=256, n_val=32, n_test=32, batch_size=64)
    model = JTT(arch="vit", width=16, depth=1, heads=2, pooling="cls", patch=4, input_shape=(3, 8, 8),
                id_epochs=1, upweight=3, lr=0.01, probe=False)
    start = {k: v.clone() for k, v in model.net.state_dict().items()}
    states = {}

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            states[trainer.current_epoch] = {k: v.clone() for k, v in module.net.state_dict().items()}

        def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            if trainer.current_epoch == 0:  # before JTT's own epoch-end hook restores the weights
                states["trained"] = {k: v.clone() for k, v in module.net.state_dict().items()}

    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[Record()])
    trainer.fit(model, datamodule=env)
    names = [k for k in start if "pos" in k or "cls" in k or "in_proj" in k]
    assert len(names) >= 3  # position embeddings, class token, attention projections
    assert all(not torch.equal(states["trained"][k], start[k]) for k in names)  # stage 1 moved them
    for k, v in start.items():  # stage 2 starts from the initial weights, every tensor exactly
        assert torch.equal(states[1][k], v), k
    assert model.initial is None and model.errors is not None  # the copy is dropped once stage 2 has it
    # Adam's state was cleared too: its step count is that of stage 2 alone, over the upsampled data.
    stage2 = -(-(256 + 2 * model.errors) // 64)
    assert {int(s["step"]) for s in trainer.optimizers[0].state.values()} == {stage2}

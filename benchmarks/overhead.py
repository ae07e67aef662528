"""Training overhead: a testbed run (`Trainer.fit` of ERM on SpuriousShapes, as a sweep configures it) vs a
hand-written PyTorch loop doing identical work: same initial weights, data order, steps and batch size.
The two runs' per-step losses are checked equal before anything is timed.

    .venv/bin/python benchmarks/overhead.py [--repeats 7] [--threads 2]
"""

import logging
import tempfile

import lightning as L
import torch
import torch.nn.functional as F
from common import bench_args, interleaved, report, timed

from testbed.baselines import ERM
from testbed.envs import SpuriousShapes
from testbed.envs.base import TensorLoader
from testbed.training.backbones import build_backbone

# (label, width, depth, n_train, epochs): the default MLP, and one whose step takes >= 40 ms here.
CASES = [("default MLP (width 256, depth 2)", 256, 2, 8192, 2), ("large MLP (width 2048, depth 2)", 2048, 2, 1024, 2)]
BATCH = 256


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].detach())


def testbed_fit(env: SpuriousShapes, init: dict, width: int, depth: int, epochs: int,
                callbacks: list[L.Callback]) -> float:
    """Seconds of `trainer.fit` with the Trainer settings a sweep run uses (CSV logger, no checkpoints,
    no validation, no progress bar, model summary or hparams.yaml)."""
    model = ERM(width=width, depth=depth, input_shape=env.input_shape, n_classes=env.n_classes)
    model.net.load_state_dict(init)
    with tempfile.TemporaryDirectory() as out:
        trainer = L.Trainer(max_epochs=epochs, logger=L.pytorch.loggers.CSVLogger(out, name="", version=""),
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            enable_autolog_hparams=False, limit_val_batches=0, num_sanity_val_steps=0,
                            callbacks=callbacks)
        return timed(lambda: trainer.fit(model, datamodule=env))


def hand_loop(env: SpuriousShapes, init: dict, width: int, depth: int, epochs: int, losses: list) -> float:
    """Seconds of a plain loop over the same batches, with the same model, optimiser and loss."""
    net = build_backbone("mlp", env.input_shape, env.n_classes, width, depth)
    net.load_state_dict(init)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = TensorLoader(env.train_data, BATCH, shuffle=True, seed=env.seed)

    def loop() -> None:
        for _ in range(epochs):
            for batch in loader:
                opt.zero_grad()  # before the forward, as Lightning does: the old gradients are freed first
                loss = F.cross_entropy(net(batch.x), batch.y)
                loss.backward()
                opt.step()
                losses.append(loss.detach())

    return timed(loop)


def bench(label: str, width: int, depth: int, n_train: int, epochs: int, repeats: int) -> None:
    env = SpuriousShapes(n_train=n_train, n_val=BATCH, n_test=BATCH, batch_size=BATCH)
    env.setup()
    init = build_backbone("mlp", env.input_shape, env.n_classes, width, depth).state_dict()
    recorder, mine = LossRecorder(), []
    testbed_fit(env, init, width, depth, epochs, [recorder])
    hand_loop(env, init, width, depth, epochs, mine)
    diff = (torch.stack(recorder.losses) - torch.stack(mine)).abs().max().item()
    assert diff <= 1e-6, f"losses differ by {diff}"
    times = interleaved({"hand-written loop": lambda: hand_loop(env, init, width, depth, epochs, []),
                         "testbed (Trainer.fit)": lambda: testbed_fit(env, init, width, depth, epochs, [])},
                        repeats=repeats)
    print(f"{label}: {len(mine)} steps, per-step losses equal (max |diff| {diff:.1e}); per step:")
    report({k: [t / len(mine) for t in v] for k, v in times.items()})


def main() -> None:
    args = bench_args(__doc__, repeats=7)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print(f"training overhead, {args.threads} threads, batch {BATCH}, {args.repeats} interleaved rounds")
    for case in CASES:
        bench(*case, repeats=args.repeats)


if __name__ == "__main__":
    main()

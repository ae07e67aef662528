"""ColoredMNIST: real MNIST digits whose colour is a spurious attribute (Arjovsky et al. 2019).

The causal feature is the digit: the binary label is `digit < 5`, flipped with probability `label_noise`.
The spurious attribute `a` is the colour: the digit is drawn in the red (a = 0) or the green (a = 1) channel,
and the colour agrees with the label with probability `corr`. With the defaults of "Invariant Risk
Minimization" (label noise 0.25; corr 0.9 and 0.8 in training, 0.1 at test; 2 x 14 x 14 images) the colour
predicts the label better than the digit does, so the ERM optimum is spurious.

`intervene(a=...)` recolours the same digit. There is no `causal` intervention: changing the class of a real
digit means drawing another digit, whose handwriting differs too, so the result would not be a
counterfactual of the same sample. `causal_sensitivity` is therefore not reported.
"""

import os

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.datasets import MNIST

from testbed.envs.base import Batch, EnvSpec, ShiftedEnv, Split, agreement, corr_specs
from testbed.envs.files import require_files
from testbed.errors import ConfigError, check_positive, check_unit

RAW_FILES = [f"MNIST/raw/{os.path.splitext(name)[0]}" for name, _ in MNIST.resources]  # what torchvision reads
VAL_SHARE = 6  # validation digits: the last sixth of the seeded order of the training split (10000 of MNIST's)


class ColoredMNIST(ShiftedEnv):
    """MNIST digits coloured red or green by a spurious attribute, loaded with torchvision's `MNIST`.

    Training environments draw digits from MNIST's training split; the test samples of held-out (`id`) and
    shifted (`ood`) environments draw from its test split, so every tested digit is unseen. Their validation
    samples draw from the last sixth (10000 digits) of the seeded order of the training split, which no training
    environment uses: disjoint from every test and every training digit.

    Args:
        root: folder holding `MNIST/raw/` as torchvision lays it out.
        download: fetch MNIST into `root` if it is not there.
        train_corrs: P(a == y) in each training environment (Arjovsky et al. 2019: 0.9 and 0.8).
        val_corrs: held-out in-distribution environments; defaults to `train_corrs`.
        test_corrs: shifted environments (Arjovsky et al. 2019: 0.1; 0.5 removes the correlation).
        label_noise: probability that the label is not `digit < 5` (0.25 caps causal accuracy at 0.75).
        spurious_saliency: 0 draws the digit in both channels (colour invisible), 1 in one channel only.
        p_break: fraction of training samples whose colour is drawn independently of the label.
        image_size: side of the images; 14 subsamples every other pixel, as Arjovsky et al. 2019 do.
        n_train: training digits, dealt in turn to the training environments (Arjovsky et al. 2019: 2 x 25000;
            at most 50000, the training split less the validation pool). A larger `n_train` extends a smaller one.
        n_val, n_test: validation and test digits of each held-out and each shifted environment (at most 10000).
    """

    n_classes = 2
    interventions = ("a",)

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        train_corrs: tuple[float, ...] = (0.9, 0.8),
        val_corrs: tuple[float, ...] | None = None,
        test_corrs: tuple[float, ...] = (0.1, 0.5),
        label_noise: float = 0.25,
        spurious_saliency: float = 1.0,
        p_break: float = 0.0,
        image_size: int = 14,
        n_train: int = 50000,
        n_val: int = 2000,
        n_test: int = 10000,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed)
        self.specs = corr_specs(train_corrs, val_corrs, test_corrs)
        for field, value in [("label_noise", label_noise), ("spurious_saliency", spurious_saliency),
                             ("p_break", p_break)]:
            check_unit(field, value)
        for field, value in [("image_size", image_size), ("n_train", n_train), ("n_val", n_val), ("n_test", n_test)]:
            check_positive(field, value)
        self.check_specs()
        self.label_noise, self.spurious_saliency, self.p_break = label_noise, spurious_saliency, p_break
        self.image_size, self.n_train, self.n_val, self.n_test = image_size, n_train, n_val, n_test
        self.input_shape = (2, image_size, image_size)
        if not download:
            require_files("MNIST", root, RAW_FILES, MNIST.mirrors[0])
        self.mnist = {train: MNIST(root, train=train, download=download) for train in (True, False)}
        self.val_pool = len(self.mnist[True]) // VAL_SHARE
        for field, n, available in [("n_train", n_train, len(self.mnist[True]) - self.val_pool),
                                    ("n_val", n_val, self.val_pool),
                                    ("n_test", n_test, len(self.mnist[False]))]:
            if n > available:
                raise ConfigError(f"{field}: {n} is not allowed; at most {available} MNIST digits are set aside "
                                  "for it")

    @property
    def ceiling(self) -> float:
        """A model that reads the digit and ignores the colour is right unless the label is noise (0.75 in
        Arjovsky et al. 2019)."""
        return 1.0 - self.label_noise

    @property
    def spurious_accuracy(self) -> float:
        """The colour alone predicts the training label as often as it agrees with it."""
        return agreement(self.specs, self.p_break, self.n_attr)

    def make(self, spec: EnvSpec, index: int, split: Split) -> Batch:
        g = self.generator(spec, split)
        mnist = self.mnist[split != "test"]
        order = torch.randperm(len(mnist), generator=torch.Generator().manual_seed(self.seed))
        if split == "train":  # one seeded order of the training digits, dealt to the environments in turn
            rows = order[: self.n_train][index:: len(self.names("train"))]
        elif split == "val":  # the tail of that order, which no training environment reaches
            pool = order[len(mnist) - self.val_pool:]
            rows = pool[torch.randperm(self.val_pool, generator=g)[: self.n_val]]
        else:
            rows = torch.randperm(len(mnist), generator=g)[: self.n_test]
        u = torch.rand(len(rows), 4, generator=g)
        digit = mnist.targets[rows]
        s = (digit < 5).long()
        y = torch.where(u[:, 0] < self.label_noise, 1 - s, s)
        a = torch.where(u[:, 1] < spec.corr, y, 1 - y)
        if spec.role == "train" and self.p_break > 0:
            a = torch.where(u[:, 2] < self.p_break, (u[:, 3] < 0.5).long(), a)
        # "nearest" at half size keeps every other pixel: exactly the 14 x 14 images of Arjovsky et al. 2019.
        gray = F.interpolate(mnist.data[rows, None].float() / 255, size=self.image_size, mode="nearest")
        return Batch(self.render(gray, a), y, a, torch.full_like(y, index), digit[:, None])

    def render(self, gray: Tensor, a: Tensor) -> Tensor:
        """The digit at full intensity in channel `a`, and at `1 - spurious_saliency` in the other."""
        weight = torch.where(F.one_hot(a, 2).bool(), 1.0, 1.0 - self.spurious_saliency)
        return gray * weight[:, :, None, None]

    def causal(self, batch: Batch) -> Tensor:
        return (batch.z[:, 0] < 5).long()

    def intervene(self, batch: Batch, a: Tensor | None = None, causal: Tensor | None = None) -> Tensor:
        if causal is not None:
            raise NotImplementedError("ColoredMNIST cannot change the class of a real digit")
        gray = batch.x.amax(1, keepdim=True)  # the colour channel holds the digit at full intensity
        return self.render(gray, batch.a if a is None else a)

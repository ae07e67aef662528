"""SpuriousShapes: images of shapes rendered in bulk from latents, with a controllable spurious attribute.

The causal feature is the shape class `s`; the label `y` is `s` with probability `1 - label_noise`.
The spurious attribute `a` (a colour) agrees with `y` with probability `corr` in each sub-environment.
Because every image is rendered from its latents, `intervene` can re-render the same sample with the
colour or the shape replaced, which gives counterfactual reliance metrics.
"""

from typing import Literal

import torch
from torch import Tensor

from testbed.envs.base import Batch, EnvSpec, ShiftedEnv, Split, agreement, corr_specs
from testbed.errors import ConfigError, check_positive, check_unit

# Shapes as predicates on coordinates (u, v) in units of the shape's radius.
SHAPES = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "plus": lambda u, v: ((u.abs() <= 0.35) & (v.abs() <= 1)) | ((v.abs() <= 0.35) & (u.abs() <= 1)),
    "triangle": lambda u, v: (v <= 0.8) & (u.abs() <= (v + 1) / 1.8),
    "square": lambda u, v: (u.abs() <= 0.8) & (v.abs() <= 0.8),
    "ring": lambda u, v: ((u * u + v * v) <= 1.0) & ((u * u + v * v) >= 0.35),
    "diamond": lambda u, v: (u.abs() + v.abs()) <= 1.0,
    "bar": lambda u, v: (u.abs() <= 1.0) & (v.abs() <= 0.3),
    "cross": lambda u, v: ((u.abs() - v.abs()).abs() <= 0.3) & (u.abs() <= 0.85) & (v.abs() <= 0.85),
}
PALETTE = torch.tensor([
    [1.0, 0.1, 0.1], [0.1, 0.9, 0.1], [0.15, 0.3, 1.0], [1.0, 0.9, 0.1],
    [0.9, 0.1, 0.9], [0.1, 0.9, 0.9], [1.0, 0.55, 0.0], [0.55, 0.3, 0.1],
])
GRAY = torch.tensor([0.6, 0.6, 0.6])
KEY = 2**24  # a sample's pixel noise is seeded by two latents below KEY (exact in float32): a 48-bit key
CHUNK = 8192  # samples rendered at once, to bound memory


class SpuriousShapes(ShiftedEnv):
    """Shapes (causal) coloured by a spurious attribute, with Colored-MNIST-like defaults.

    Args:
        train_corrs: P(a == y) in each training environment (Arjovsky et al. 2019 use 0.9 and 0.8).
        val_corrs: held-out in-distribution environments; defaults to `train_corrs`.
        test_corrs: shifted environments; 0.1 reverses the correlation, 1/n_classes removes it.
        label_noise: probability that the label is not the shape's class (0.25 caps causal accuracy at 0.75).
        spurious_saliency: 0 makes the attribute invisible, 1 renders it at full contrast.
        spurious_feature: where the attribute shows: the shape's colour, the background, or a corner patch.
        causal_difficulty: 0 to 1; adds pixel noise and shrinks shapes, making the shape harder to read.
        p_break: fraction of training samples whose attribute is drawn independently of the label.
        n_classes: number of shape classes (2 to 8); the attribute has as many values.
        n_train: training samples, split evenly over the training environments.
        n_val, n_test: validation and test samples of each held-out and each shifted environment (drawn apart).
    """

    interventions = ("a", "causal")

    def __init__(
        self,
        train_corrs: tuple[float, ...] = (0.9, 0.8),
        val_corrs: tuple[float, ...] | None = None,
        test_corrs: tuple[float, ...] = (0.1, 0.5),
        label_noise: float = 0.25,
        spurious_saliency: float = 1.0,
        spurious_feature: Literal["color", "background", "patch"] = "color",
        causal_difficulty: float = 0.0,
        p_break: float = 0.0,
        n_classes: int = 2,
        image_size: int = 28,
        n_train: int = 10000,
        n_val: int = 2000,
        n_test: int = 2000,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed)
        self.save_hyperparameters()
        self.specs = corr_specs(train_corrs, val_corrs, test_corrs)
        for field, value in [("label_noise", label_noise), ("spurious_saliency", spurious_saliency),
                             ("causal_difficulty", causal_difficulty), ("p_break", p_break)]:
            check_unit(field, value)
        for field, value in [("image_size", image_size), ("n_train", n_train), ("n_val", n_val),
                             ("n_test", n_test)]:
            check_positive(field, value)
        if not 2 <= n_classes <= len(SHAPES):
            raise ConfigError(f"n_classes: {n_classes} is not allowed; it must be in [2, {len(SHAPES)}]")
        if image_size < 8:
            raise ConfigError(f"image_size: {image_size} is not allowed; it must be at least 8")
        if spurious_feature not in ("color", "background", "patch"):
            raise ConfigError(f"spurious_feature: {spurious_feature!r} is not allowed; "
                              "choose one of color, background, patch")
        self.check_specs()
        self.label_noise, self.p_break = label_noise, p_break
        self.spurious_saliency, self.spurious_feature = spurious_saliency, spurious_feature
        self.causal_difficulty = causal_difficulty
        self.n_classes, self.image_size = n_classes, image_size
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.input_shape = (3, image_size, image_size)

    @property
    def ceiling(self) -> float:
        """A model that reads the shape perfectly and ignores the colour is right unless the label is noise."""
        return 1.0 - self.label_noise

    @property
    def spurious_accuracy(self) -> float:
        """The colour alone predicts the training label as often as it agrees with it."""
        return agreement(self.specs, self.p_break, self.n_attr)

    def size(self, spec: EnvSpec, index: int, split: Split) -> int:
        if split != "train":
            return self.n_val if split == "val" else self.n_test
        k = len(self.names("train"))
        return self.n_train // k + (index < self.n_train % k)

    def make(self, spec: EnvSpec, index: int, split: Split) -> Batch:
        """Draw latents row by row from one uniform matrix, seeded by the sub-environment's name and split, so
        a larger `n_train` extends a smaller one, the evaluation environments do not depend on the training
        size, and validation and test samples are independent draws."""
        n, k = self.size(spec, index, split), self.n_classes
        u = torch.rand(n, 10, generator=self.generator(spec, split))
        s = (u[:, 0] * k).long().clamp(max=k - 1)
        other = lambda v, col: (v + 1 + (u[:, col] * (k - 1)).long().clamp(max=k - 2)) % k  # noqa: E731
        y = torch.where(u[:, 1] < self.label_noise, other(s, 2), s)
        a = torch.where(u[:, 3] < spec.corr, y, other(y, 4))
        if spec.role == "train" and self.p_break > 0:
            a = torch.where(u[:, 5] < self.p_break, (u[:, 4] * k).long().clamp(max=k - 1), a)
        shrink = 1.0 - 0.4 * self.causal_difficulty
        r = (0.16 + 0.14 * u[:, 8]) * shrink  # radius as a fraction of the image side
        cx, cy = r + (1 - 2 * r) * u[:, 6], r + (1 - 2 * r) * u[:, 7]
        key = (u[:, [9, 8]] * KEY).floor().clamp(max=KEY - 1)  # the seed of this sample's own pixel noise
        z = torch.cat([torch.stack([s.float(), cx, cy, r], dim=1), key], dim=1)
        x = self.render(z, a)
        return Batch(x, y, a, torch.full_like(y, index), z)

    def causal(self, batch: Batch) -> Tensor:
        return batch.z[:, 0].long()

    def intervene(self, batch: Batch, a: Tensor | None = None, causal: Tensor | None = None) -> Tensor:
        z = batch.z.clone()
        if causal is not None:
            z[:, 0] = causal.to(z.dtype)
        return self.render(z, batch.a if a is None else a)

    def render(self, z: Tensor, a: Tensor) -> Tensor:
        """Images `[n, 3, side, side]`, rendered chunk by chunk straight into one preallocated tensor."""
        x = torch.empty(len(a), *self.input_shape, device=z.device)
        for i in range(0, len(a), CHUNK):
            self._render(z[i:i + CHUNK], a[i:i + CHUNK], x[i:i + CHUNK])
        return x

    def _render(self, z: Tensor, a: Tensor, out: Tensor) -> None:
        device, side = z.device, self.image_size
        s, cx, cy, r = z[:, 0].long(), z[:, 1], z[:, 2], z[:, 3]
        coords = (torch.arange(side, device=device) + 0.5) / side
        u = (coords[None, None, :] - cx[:, None, None]) / r[:, None, None]  # [n, 1, W]
        v = (coords[None, :, None] - cy[:, None, None]) / r[:, None, None]  # [n, H, 1]
        mask = torch.zeros(len(s), side, side, dtype=torch.bool, device=device)
        for cls, shape in enumerate(list(SHAPES.values())[: self.n_classes]):
            idx = (s == cls).nonzero().squeeze(1)
            mask[idx] = shape(u[idx], v[idx])
        sal, colour = self.spurious_saliency, PALETTE.to(device)[a]
        gray = GRAY.to(device).expand_as(colour)
        fg, bg = gray, torch.zeros_like(colour)
        if self.spurious_feature == "color":
            fg = (1 - sal) * gray + sal * colour
        elif self.spurious_feature == "background":
            bg = sal * 0.5 * colour
        torch.where(mask[:, None], fg[:, :, None, None], bg[:, :, None, None], out=out)
        if self.spurious_feature == "patch":
            p = max(2, side // 6)
            out[:, :, :p, :p] = sal * colour[:, :, None, None]
        if self.causal_difficulty > 0:
            out.add_(self.noise(z[:, 4:6]).to(device), alpha=0.5 * self.causal_difficulty)

    def noise(self, keys: Tensor) -> Tensor:
        """Each sample's own Gaussian pixel noise, from a generator seeded by its key: fresh per sample, and the
        same whenever the sample is rendered again (`intervene`)."""
        out = torch.empty(len(keys), *self.input_shape)
        g = torch.Generator()
        for i, (hi, lo) in enumerate(keys.long().tolist()):
            g.manual_seed(hi * KEY + lo)
            torch.randn(self.input_shape, generator=g, out=out[i])
        return out

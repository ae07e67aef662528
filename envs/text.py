"""SpuriousText: token sequences rendered in bulk from latents, with a marker token as the spurious attribute.

The causal class `s` is the token set in the majority among the content tokens: reading it takes counting
several tokens, not one. The label `y` is `s` with probability `1 - label_noise`. The spurious attribute `a`
is a marker token, inserted at a random position, that agrees with `y` with probability `corr`. Every
sequence is rendered from its latents (the role and the choice of token of each content slot, relative to
the causal class), so `intervene` re-renders the same sequence with the marker or the majority set replaced.

Vocabulary: token 0 pads (unused here, reserved as the pad id of every token environment), tokens 1..k are
the markers, then k content sets of equal size, then the neutral filler tokens.
"""

import torch
from torch import Tensor

from testbed.envs.base import Batch, EnvSpec, ShiftedEnv, Split, corr_specs
from testbed.errors import ConfigError, check_positive, check_unit

PAD = 0
FILLER_SHARE = 0.25  # fraction of the content slots that hold neutral tokens
Z_HEAD = 3  # latents before the per-slot ones: causal class, marker position, marker visible


class SpuriousText(ShiftedEnv):
    """Majority-vote sequences (causal) with a marker token (spurious), as `SpuriousShapes` for text.

    Args:
        train_corrs: P(a == y) in each training environment.
        val_corrs: held-out in-distribution environments; defaults to `train_corrs`.
        test_corrs: shifted environments; 0.1 reverses the correlation, 1/n_classes removes it.
        label_noise: probability that the label is not the majority set (0.25 caps causal accuracy at 0.75).
        spurious_saliency: probability that the marker is shown; otherwise a neutral token takes its slot.
        causal_difficulty: 0 to 1; shrinks the majority's lead over the runner-up set, down to one token.
        p_break: fraction of training samples whose marker is drawn independently of the label.
        n_classes: number of content sets (classes); there are as many markers.
        vocab_size: tokens in the vocabulary (pad, markers, content sets and fillers).
        seq_len: tokens per sequence, the marker included.
        n_train: training samples, split evenly over the training environments.
        n_val, n_test: test samples in each held-out and each shifted environment; every held-out one also
            gives `n_val` validation samples, drawn apart from its test samples.
    """

    interventions = ("a", "causal")
    pad_id = PAD

    def __init__(
        self,
        train_corrs: tuple[float, ...] = (0.9, 0.8),
        val_corrs: tuple[float, ...] | None = None,
        test_corrs: tuple[float, ...] = (0.1, 0.5),
        label_noise: float = 0.25,
        spurious_saliency: float = 1.0,
        causal_difficulty: float = 0.0,
        p_break: float = 0.0,
        n_classes: int = 2,
        vocab_size: int = 32,
        seq_len: int = 16,
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
        for field, value in [("n_train", n_train), ("n_val", n_val), ("n_test", n_test)]:
            check_positive(field, value)
        if n_classes < 2:
            raise ConfigError(f"n_classes: {n_classes} is not allowed; it must be at least 2")
        if vocab_size < 1 + n_classes + 2 * (n_classes + 1):
            raise ConfigError(f"vocab_size: {vocab_size} is not allowed; {n_classes} classes need at least "
                              f"{1 + n_classes + 2 * (n_classes + 1)} (pad, markers, 2 tokens per set)")
        self.n_content = seq_len - 1
        self.n_fill = int(FILLER_SHARE * self.n_content)
        if self.n_content - self.n_fill < n_classes + 1:
            raise ConfigError(f"seq_len: {seq_len} is not allowed; {n_classes} classes need at least "
                              f"{-(-(n_classes + 2) // (1 - FILLER_SHARE)):.0f}")
        self.check_specs()
        self.label_noise, self.p_break = label_noise, p_break
        self.spurious_saliency, self.causal_difficulty = spurious_saliency, causal_difficulty
        self.n_classes, self.vocab_size, self.seq_len = n_classes, vocab_size, seq_len
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.input_shape = (seq_len,)
        self.set_size = (vocab_size - 1 - n_classes) // (n_classes + 1)  # tokens per content set
        self.content_start = 1 + n_classes
        self.filler_start = self.content_start + n_classes * self.set_size
        self.n_filler_tokens = vocab_size - self.filler_start

    def size(self, spec: EnvSpec, index: int, split: Split) -> int:
        if spec.role != "train":
            return self.n_val if split == "val" or spec.role == "id" else self.n_test
        k = len(self.names("train"))
        return self.n_train // k + (index < self.n_train % k)

    def make(self, spec: EnvSpec, index: int, split: Split) -> Batch:
        """Draw latents from one seeded generator per sub-environment and split: the evaluation environments do not
        depend on the training size, and validation samples are drawn apart from test samples."""
        n, k = self.size(spec, index, split), self.n_classes
        g = self.generator(spec, split)
        u = torch.rand(n, 8, generator=g)
        s = (u[:, 0] * k).long().clamp(max=k - 1)
        other = lambda v, col: (v + 1 + (u[:, col] * (k - 1)).long().clamp(max=k - 2)) % k  # noqa: E731
        y = torch.where(u[:, 1] < self.label_noise, other(s, 2), s)
        a = torch.where(u[:, 3] < spec.corr, y, other(y, 4))
        if spec.role == "train" and self.p_break > 0:
            a = torch.where(u[:, 5] < self.p_break, (u[:, 4] * k).long().clamp(max=k - 1), a)
        pos = (u[:, 6] * self.seq_len).long().clamp(max=self.seq_len - 1)
        visible = (u[:, 7] < self.spurious_saliency).long()
        roles = self.roles(n, g)
        which = torch.randint(0, 2**30, (n, self.n_content), generator=g)
        z = torch.cat([s[:, None], pos[:, None], visible[:, None], roles, which], dim=1)
        return Batch(self.render(z, a), y, a, torch.full_like(y, index), z)

    def roles(self, n: int, g: torch.Generator) -> Tensor:
        """Each content slot's role: 0 the majority set, j in 1..k-1 the set j after it, k a neutral filler.
        The majority leads the runner-up by 1 to `max_lead` tokens, fewer as `causal_difficulty` grows."""
        k, t = self.n_classes, self.n_content - self.n_fill
        base = -(-t // k)  # a set needs more than ceil(t / k) tokens to be the strict majority
        max_lead = max(1, round((1 - self.causal_difficulty) * (t - base)))
        n_major = base + 1 + (torch.rand(n, generator=g) * max_lead).long().clamp(max=max_lead - 1)
        n_major = n_major.clamp(max=t)
        rest = t - n_major  # shared as evenly as possible among the k - 1 other sets
        slot = torch.arange(self.n_content)
        roles = torch.full((n, self.n_content), k)
        roles[slot[None] < n_major[:, None]] = 0
        j = slot[None] - n_major[:, None]  # rank of the slot among the other sets' slots
        others = (j >= 0) & (j < rest[:, None])
        roles[others] = (1 + j % (k - 1))[others]
        order = torch.rand(n, self.n_content, generator=g).argsort(dim=1)
        return roles.gather(1, order)

    def causal(self, batch: Batch) -> Tensor:
        return batch.z[:, 0]

    def intervene(self, batch: Batch, a: Tensor | None = None, causal: Tensor | None = None) -> Tensor:
        z = batch.z
        if causal is not None:
            z = z.clone()
            z[:, 0] = causal
        return self.render(z, batch.a if a is None else a)

    def render(self, z: Tensor, a: Tensor) -> Tensor:
        """Token ids `[n, seq_len]`: the content slots in order, with the marker (or a filler) at its position."""
        k, n_content = self.n_classes, self.n_content
        s, pos, visible = z[:, 0], z[:, 1], z[:, 2].bool()
        roles, which = z[:, Z_HEAD:Z_HEAD + n_content], z[:, Z_HEAD + n_content:]
        content_set = (s[:, None] + roles) % k
        content = torch.where(roles < k, self.content_start + content_set * self.set_size + which % self.set_size,
                              self.filler_start + which % self.n_filler_tokens)
        marker = torch.where(visible, 1 + a, self.filler_start + which[:, 0] % self.n_filler_tokens)
        j = torch.arange(self.seq_len, device=z.device)[None]
        src = (j - (j > pos[:, None]).long()).clamp(max=n_content - 1)  # content index of each output position
        return torch.where(j == pos[:, None], marker[:, None], content.gather(1, src))

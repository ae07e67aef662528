"""Transformer encoders for the `transformer` (token ids) and `vit` (image patches) backbones.

Both are torch.nn's pre-norm `TransformerEncoderLayer` (norm_first=True, as in GPT-2 and ViT) over learned
positions, pooled by the mean of the tokens (padding excluded) or by a class token (Devlin et al. 2019;
Dosovitskiy et al. 2021), then a final LayerNorm. The feed-forward width is 4 x `width` (Vaswani et al. 2017).
"""

from typing import Literal

import torch
from torch import Tensor, nn

Pooling = Literal["mean", "cls"]


class Encoder(nn.Module):
    """`depth` pre-norm encoder layers over embedded tokens `[n, n_tokens, width]`, pooled to `[n, width]`."""

    def __init__(self, n_tokens: int, width: int, depth: int, heads: int, pooling: Pooling) -> None:
        super().__init__()
        self.pooling = pooling
        self.cls = nn.Parameter(torch.zeros(1, 1, width)) if pooling == "cls" else None
        self.pos = nn.Parameter(0.02 * torch.randn(1, n_tokens + (pooling == "cls"), width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, h: Tensor, pad: Tensor | None = None) -> Tensor:
        """`pad` marks padding tokens (True), which attention and mean pooling skip."""
        if self.cls is not None:
            h = torch.cat([self.cls.expand(len(h), -1, -1), h], dim=1)
            pad = None if pad is None else torch.cat([pad.new_zeros(len(h), 1), pad], dim=1)
        h = self.norm(self.layers(h + self.pos, src_key_padding_mask=pad))
        if self.cls is not None:
            return h[:, 0]
        if pad is None:
            return h.mean(1)
        keep = (~pad).unsqueeze(2).to(h.dtype)
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1)


class TokenEncoder(nn.Module):
    """Token ids `[n, seq_len]` (0 pads) embedded and encoded into `[n, width]`."""

    def __init__(self, vocab_size: int, seq_len: int, width: int, depth: int, heads: int, pooling: Pooling,
                 pad_id: int = 0) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, width)
        self.encoder = Encoder(seq_len, width, depth, heads, pooling)

    def forward(self, x: Tensor) -> Tensor:
        pad = x == self.pad_id
        # No mask when nothing is padded (SpuriousText): attention then skips the mask arithmetic.
        return self.encoder(self.embed(x), pad if bool(pad.any()) else None)


class PatchEncoder(nn.Module):
    """Images `[n, c, h, w]` cut into `patch` x `patch` patches, each linearly embedded, and encoded (ViT)."""

    def __init__(self, input_shape: tuple[int, ...], patch: int, width: int, depth: int, heads: int,
                 pooling: Pooling) -> None:
        super().__init__()
        channels, height, side = input_shape
        self.embed = nn.Conv2d(channels, width, patch, stride=patch)
        self.encoder = Encoder((height // patch) * (side // patch), width, depth, heads, pooling)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(self.embed(x).flatten(2).transpose(1, 2))

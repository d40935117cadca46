"""A dilated convolutional encoder, TS2Vec's (Yue et al. 2022): [B, T, F] -> one code per sequence.

A linear layer lifts each step to ``hidden_size`` values; ``depth`` residual blocks of two
convolutions (kernel 3, dilation 2^i in block i) then see ever longer stretches of the series, and
a last block maps to ``code_size`` values per step. The code is their maximum over the valid steps.
During training a share of the steps (``mask``) is zeroed after the linear layer, TS2Vec's timestamp
masking: the code must not hang on any one step.

With ``zero_init_residual`` each block's second convolution starts at zero, as torchvision's ResNets
offer (Goyal et al. 2017): the untrained blocks are identities, so an untrained encoder is its lift
and its last block alone, each step on its own, and the features that see a stretch of the series
are the ones training gives it. By default the blocks start random and, max-pooled, are already a
good code (ROCKET's lesson).

It reads the series step by step, not in the model's patches (``reads_full_series``), and gives its
per-step outputs to objectives that contrast them (``steps``, ``objective=hierarchical``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.functional import gelu

from seqae.errors import ConfigError
from seqae.models.layers import steps_mask


class DilatedConvEncoder(nn.Module):
    """TS2Vec's encoder: residual dilated convolutions over every step, max-pooled (``encoder=dilated``)."""

    reads_full_series = True  # seqae gives it [B, T, F], not patches

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 64,
        depth: int = 10,
        code_size: int = 320,
        mask: float = 0.5,
        dropout: float = 0.1,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("hidden_size", hidden_size), ("depth", depth), ("code_size", code_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"encoder.{name} must be a positive integer, got {value!r}.")
        if not (0.0 <= mask < 1.0 and 0.0 <= dropout < 1.0):
            raise ConfigError(
                f"encoder.mask and encoder.dropout must be in [0, 1), got {mask!r}, {dropout!r}."
            )
        if not isinstance(zero_init_residual, bool):
            raise ConfigError(
                f"encoder.zero_init_residual must be true or false, got {zero_init_residual!r}."
            )
        self.lift = nn.Linear(input_size, hidden_size)
        widths = [hidden_size] * depth + [code_size]
        self.blocks = nn.ModuleList(
            ResidualBlock(widths[i - 1] if i else hidden_size, widths[i], 2**i, project=i == depth)
            for i in range(depth + 1)
        )
        if zero_init_residual:  # the last block, which changes the width, keeps its projection
            for block in self.blocks[:-1]:
                nn.init.zeros_(block.conv2.weight)
                nn.init.zeros_(block.conv2.bias)
        self.dropout = nn.Dropout(dropout)
        self.mask, self.code_size = mask, code_size

    def steps(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x: [B, T, F] -> the per-step outputs [B, T, code_size]."""
        h = self.lift(x)
        if self.training and self.mask > 0:
            keep = torch.rand(h.shape[:2], device=h.device) >= self.mask
            h = h * keep.unsqueeze(-1).to(h.dtype)
        # Past a series' end every layer reads zeros, as the convolutions' own padding: a padded
        # series gets the outputs it would get alone.
        valid = None if lengths is None else steps_mask(lengths, h.shape[1]).unsqueeze(1).to(h.dtype)
        h = h.transpose(1, 2)
        for block in self.blocks:
            h = block(h, valid)
        return self.dropout(h.transpose(1, 2))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x: [B, T, F]; lengths: [B] valid steps (None = all T). Returns the maximum over valid steps [B, C]."""
        out = self.steps(x, lengths)
        if lengths is not None:
            out = out.masked_fill(~steps_mask(lengths, out.shape[1]).unsqueeze(-1), float("-inf"))
        return out.amax(dim=1)


class ResidualBlock(nn.Module):
    """Two dilated convolutions of kernel 3 (GELU before each), added to the input (projected by a
    1x1 convolution where the width changes, or in the last block)."""

    def __init__(self, channels_in: int, channels_out: int, dilation: int, project: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels_in, channels_out, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(channels_out, channels_out, 3, padding=dilation, dilation=dilation)
        self.skip = (
            nn.Conv1d(channels_in, channels_out, 1) if project or channels_in != channels_out else None
        )

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """x: [B, C, T]; valid: [B, 1, T] ones on valid steps (None: all are)."""
        if valid is None:
            return self.conv2(gelu(self.conv1(gelu(x)))) + (x if self.skip is None else self.skip(x))
        x = x * valid
        inner = self.conv1(gelu(x)) * valid
        return (self.conv2(gelu(inner)) + (x if self.skip is None else self.skip(x))) * valid

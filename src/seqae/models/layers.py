"""The layers around an encoder: per-series scaling, patches, a convolution read per patch, and the
masked loss over valid steps."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# instance_scale: a series flatter than this variance (in normalised units) is scaled as if it had it
INSTANCE_VAR_FLOOR = 1e-6


def steps_mask(lengths: Tensor, max_len: int) -> Tensor:
    """[B] lengths -> [B, T] boolean mask of valid steps."""
    return torch.arange(max_len, device=lengths.device) < lengths.to(torch.long).unsqueeze(-1)


def instance_scale(x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """Each series over its own valid steps' mean and standard deviation (RevIN, Kim et al. 2022),
    and [mean, log std] per feature [B, 2F]; padding stays zero."""
    if lengths is None:
        loc, var = x.mean(dim=1), x.var(dim=1, unbiased=False)
        mask = None
    else:
        mask = steps_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
        count = lengths.to(x.dtype).unsqueeze(-1)
        loc = (x * mask).sum(dim=1) / count
        var = (((x - loc.unsqueeze(1)) * mask) ** 2).sum(dim=1) / count
    scale = var.clamp_min(INSTANCE_VAR_FLOOR).sqrt()
    shape = (x - loc.unsqueeze(1)) / scale.unsqueeze(1)
    if mask is not None:
        shape = shape * mask  # padding stays zero
    return shape, torch.cat([loc, scale.log()], dim=-1)


def patches(x: Tensor, lengths: Tensor | None, p: int) -> tuple[Tensor, Tensor | None]:
    """[B, T, F] -> [B, ceil(T / p), p * F] (zero-padded), and each sequence's length in patches."""
    if p == 1:
        return x, lengths
    steps = x.shape[1]
    if steps % p:
        x = torch.nn.functional.pad(x, (0, 0, 0, p - steps % p))
    x = x.reshape(x.shape[0], x.shape[1] // p, p * x.shape[2])
    return x, None if lengths is None else torch.div(lengths + p - 1, p, rounding_mode="floor")


class ConvPatches(nn.Module):
    """Each channel's maximum, over each patch, of a convolution along the whole series: whether a
    short shape occurs in a patch wherever in it, which the patch's own values, read as a vector by
    the recurrent step, do not show (ROCKET's kernels have length 9; so do these)."""

    def __init__(self, input_size: int, channels: int, patch_size: int, kernel_size: int = 9) -> None:
        super().__init__()
        self.conv = nn.Conv1d(input_size, channels, kernel_size, padding=kernel_size // 2)
        self.patch_size = patch_size

    def forward(self, x: Tensor) -> Tensor:
        """[B, T, F] -> [B, ceil(T / patch_size), channels]."""
        y = self.conv(x.transpose(1, 2))
        y = nn.functional.max_pool1d(y, self.patch_size, self.patch_size, ceil_mode=True)
        return y.transpose(1, 2)


def masked_mse(recon: Tensor, target: Tensor, lengths: Tensor | None) -> Tensor:
    """Mean squared error over valid steps only (padding never counts)."""
    if lengths is None:
        return torch.nn.functional.mse_loss(recon, target)
    mask = steps_mask(lengths, target.shape[1]).unsqueeze(-1).to(recon.dtype)
    return ((recon - target) ** 2 * mask).sum() / (mask.sum() * target.shape[-1])


def reverse_valid_steps(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence's valid steps in time; padding stays at the end."""
    if lengths is None:
        return x.flip(1)
    t = torch.arange(x.shape[1], device=x.device)
    lengths = lengths.to(x.device).unsqueeze(-1)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # [B, T]
    return x.gather(1, index.unsqueeze(-1).expand_as(x))

"""A denoising autoencoder (Vincent et al. 2008): the encoder sees a corrupted series, the decoder
must reconstruct the clean one. ``mask``: the share of time steps set to zero (all features of a
step at once); ``noise``: the standard deviation of Gaussian noise added to every value."""

from __future__ import annotations

import torch
from torch import Tensor

from seqae.errors import ConfigError
from seqae.models import objectives


class Denoising(objectives.Objective):
    """The encoder sees a corrupted series, the decoder reconstructs the clean one (``objective=denoising``)."""

    def __init__(self, code_size: int, mask: float = 0.15, noise: float = 0.0) -> None:
        super().__init__(code_size)
        if not (0.0 <= mask < 1.0 and noise >= 0.0):
            raise ConfigError(f"mask must be in [0, 1) and noise at least 0, got mask={mask}, noise={noise}")
        self.mask, self.noise = mask, noise

    def corrupt(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        if self.mask:
            x = x * (torch.rand(x.shape[:2], device=x.device) >= self.mask).unsqueeze(-1).to(x.dtype)
        if self.noise:
            x = x + self.noise * torch.randn_like(x)
        return x

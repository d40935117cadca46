"""Built-in synthetic data: seeded multi-channel sine mixtures (the default data set)."""

from __future__ import annotations

import math

import torch

from seqae.data.datamodule import SequenceData, SequenceDataModule
from seqae.errors import ConfigError


class SinesDataModule(SequenceDataModule):
    """Each sequence draws a class, which sets its frequency band, plus a phase and an amplitude.
    Channel c is a sine at a fixed multiple of that frequency, with a fixed gain and phase
    offset (drawn once per data set), plus Gaussian noise: channels are correlated the way
    sensors watching one process are. Labels are the class ids, for downstream probes; the
    autoencoder never sees them.
    """

    name = "sines"

    def __init__(
        self,
        num_sequences: int = 2048,
        seq_len: int = 50,
        num_features: int = 10,
        num_classes: int = 4,
        noise: float = 0.05,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        for key, value in (
            ("num_sequences", num_sequences),
            ("seq_len", seq_len),
            ("num_features", num_features),
            ("num_classes", num_classes),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{key} must be a positive integer, got {value!r}.")
        if noise < 0:
            raise ConfigError(f"data.noise must be >= 0, got {noise!r}.")
        self.num_sequences, self.seq_len, self.features = num_sequences, seq_len, num_features
        self.num_classes, self.noise = num_classes, noise

    def load(self) -> SequenceData:
        g = torch.Generator().manual_seed(self.seed)
        n, t, f = self.num_sequences, self.seq_len, self.features
        labels = torch.randint(self.num_classes, (n,), generator=g)
        # class k: between k+1 and k+2 cycles per sequence; channels run at 1-1.5x that
        freq = (labels + 1 + torch.rand(n, generator=g)).unsqueeze(-1) * (
            1 + 0.5 * torch.rand(1, f, generator=g)
        )
        phase = 2 * math.pi * (torch.rand(n, 1, generator=g) + torch.rand(1, f, generator=g))
        amplitude = (0.5 + torch.rand(n, 1, generator=g)) * (0.5 + torch.rand(1, f, generator=g))
        steps = torch.linspace(0, 1, t).view(1, t, 1)
        x = amplitude.unsqueeze(1) * torch.sin(2 * math.pi * freq.unsqueeze(1) * steps + phase.unsqueeze(1))
        x = x + self.noise * torch.randn(n, t, f, generator=g)
        return SequenceData(x.float(), labels=labels)

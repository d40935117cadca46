"""Instance contrast beside reconstruction: two random crops of each series (TS2Vec's cropping) must
give codes closer to each other than to the other series' crops in the batch (SimCLR's NT-Xent loss,
through a small projection head, Chen et al. 2020). Reconstruction makes the code describe the whole
series; the contrast makes it tell series apart, which is what a classifier on the codes needs."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy, normalize

from seqae.errors import ConfigError
from seqae.models import objectives
from seqae.models.objectives import Encode


class Contrastive(objectives.Objective):
    """Instance contrast of two random crops of each series, beside reconstruction (``objective=contrastive``)."""

    def __init__(
        self,
        code_size: int,
        weight: float = 1.0,
        crop: float = 0.5,
        temperature: float = 0.2,
        head_size: int = 128,
    ) -> None:
        super().__init__(code_size)
        if not (0.0 < crop <= 1.0 and weight > 0 and temperature > 0):
            raise ConfigError(
                f"crop must be in (0, 1], weight and temperature positive, got {crop}, {weight}, {temperature}"
            )
        self.weight, self.crop, self.temperature = weight, crop, temperature
        self.head = nn.Sequential(nn.Linear(code_size, head_size), nn.ReLU(), nn.Linear(head_size, head_size))

    def extra_loss(self, encode: Encode, x: Tensor, lengths: Tensor | None, code: Tensor) -> Tensor | None:
        if len(x) < 2:
            return None  # no other series to contrast with
        views = [encode(*random_crops(x, lengths, self.crop)) for _ in range(2)]
        if self.stats_size:
            # The series' own level and scale (instance_norm) are the same in both crops: not learned,
            # and a shortcut to the answer, so they are left out of the comparison.
            keep = torch.arange(self.code_size, device=x.device) < self.code_size - self.stats_size
            views = [v * keep.to(v.dtype) for v in views]
        a, b = (normalize(self.head(v), dim=-1) for v in views)
        logits = a @ b.T / self.temperature
        target = torch.arange(len(x), device=x.device)
        return self.weight * (cross_entropy(logits, target) + cross_entropy(logits.T, target)) / 2


def random_crops(x: Tensor, lengths: Tensor | None, shortest: float) -> tuple[Tensor, Tensor]:
    """A random contiguous crop of each series' valid steps, at least ``shortest`` of them, moved to
    the start (padding zeroed): ``[B, T, F]`` and the crops' lengths ``[B]``."""
    batch, steps = x.shape[:2]
    valid = torch.full((batch,), steps, device=x.device) if lengths is None else lengths.to(x.device)
    low = (valid * shortest).ceil().long().clamp(min=1)
    size = low + (torch.rand(batch, device=x.device) * (valid - low + 1)).long().clamp(max=valid - low)
    start = (torch.rand(batch, device=x.device) * (valid - size + 1)).long().clamp(max=valid - size)
    t = torch.arange(steps, device=x.device)
    index = (start[:, None] + t).clamp(max=steps - 1)
    crops = x.gather(1, index.unsqueeze(-1).expand_as(x)) * (t < size[:, None]).unsqueeze(-1).to(x.dtype)
    return crops[:, : int(size.max())], size

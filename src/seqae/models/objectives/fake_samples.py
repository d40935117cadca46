"""DTCR's auxiliary task (Ma et al., NeurIPS 2019): tell real series from fakes made by shuffling a
random ``shuffled`` share of each one's time steps, with a small classifier on the code. The
encoder must then capture temporal order, which reconstruction alone does not force."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.functional import binary_cross_entropy_with_logits

from seqae.errors import ConfigError
from seqae.models import objectives
from seqae.models.objectives import Encode


class FakeSamples(objectives.Objective):
    """DTCR's real-or-shuffled classifier on the code, beside reconstruction (``objective=fake_samples``)."""

    def __init__(
        self, code_size: int, weight: float = 1.0, shuffled: float = 0.2, head_size: int = 128
    ) -> None:
        super().__init__(code_size)
        if not (0.0 < shuffled <= 1.0 and weight > 0):
            raise ConfigError(f"shuffled must be in (0, 1] and weight positive, got {shuffled}, {weight}")
        self.weight, self.shuffled = weight, shuffled
        self.head = nn.Sequential(nn.Linear(code_size, head_size), nn.ReLU(), nn.Linear(head_size, 1))

    def extra_loss(self, encode: Encode, x: Tensor, lengths: Tensor | None, code: Tensor) -> Tensor:
        fakes = encode(shuffle_steps(x, lengths, self.shuffled), lengths)
        logits = self.head(torch.cat([code, fakes])).squeeze(-1)
        real = torch.cat([torch.ones(len(code)), torch.zeros(len(fakes))]).to(logits)
        return self.weight * binary_cross_entropy_with_logits(logits, real)


def shuffle_steps(x: Tensor, lengths: Tensor | None, share: float) -> Tensor:
    """``x`` with ``share`` of each series' valid steps (at least 2) permuted among themselves."""
    batch, steps = x.shape[:2]
    valid = torch.full((batch,), steps, device=x.device) if lengths is None else lengths.to(x.device)
    # a random rank for every valid step; the lowest ranks are the chosen ones
    ranks = torch.rand(batch, steps, device=x.device).masked_fill(
        torch.arange(steps, device=x.device) >= valid[:, None], 2.0
    )
    chosen_count = torch.minimum((valid * share).long().clamp(min=2), valid)
    order = ranks.argsort(dim=1)
    chosen = torch.arange(steps, device=x.device) < chosen_count[:, None]  # [B, T] over the order
    # rotate the chosen positions among themselves by a random permutation of their values
    source = order.clone()
    keys = torch.rand(batch, steps, device=x.device).masked_fill(~chosen, 2.0)
    permuted = keys.argsort(dim=1)
    source[chosen] = order.gather(1, permuted)[chosen]
    index = torch.arange(steps, device=x.device).repeat(batch, 1)
    index.scatter_(1, order, source)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))

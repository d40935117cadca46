"""TS2Vec's hierarchical contrast beside reconstruction (Yue et al. 2022, ``objective=hierarchical``).

Two overlapping random crops of each series go through the encoder; on the steps they share, each
step's output must be closer to the same step in the other crop than to the batch's other series
there (instance contrast) and than to the series' other steps (temporal contrast). The outputs are
then max-pooled in pairs of steps and contrasted again, level by level, so that the contrast holds
at every scale up to the whole series. It needs an encoder that gives its per-step outputs
(``steps``, as ``encoder=dilated``'s does) and reads them without a causal order: a recurrent
encoder's output at a step depends on all before it, and two crops that start apart cannot agree.

As in TS2Vec, crops are taken over the batch's padded length: in a batch of several lengths a
shorter series' crop may hold padding (zeros), which both crops then see alike.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import log_softmax, max_pool1d

from seqae.errors import ConfigError
from seqae.models import objectives
from seqae.models.objectives import Encode


class HierarchicalContrast(objectives.Objective):
    """Instance and temporal contrast of two crops' per-step outputs, at every scale."""

    needs_steps = True  # the model checks that its encoder gives per-step outputs

    def __init__(
        self, code_size: int, weight: float = 1.0, alpha: float = 0.5, max_length: int = 512
    ) -> None:
        super().__init__(code_size)
        if not (weight > 0 and 0.0 <= alpha <= 1.0 and isinstance(max_length, int) and max_length >= 2):
            raise ConfigError(
                f"objective.weight must be positive, objective.alpha in [0, 1] and objective.max_length "
                f"an integer of at least 2, got {weight!r}, {alpha!r}, {max_length!r}."
            )
        self.weight, self.alpha, self.max_length = weight, alpha, max_length

    def extra_loss(self, encode: Encode, x: Tensor, lengths: Tensor | None, code: Tensor) -> Tensor | None:
        if x.shape[1] > self.max_length:  # a window of each series: the temporal contrast is T x T
            x = window(x, torch.randint(0, x.shape[1] - self.max_length + 1, (len(x),)), self.max_length)
        first, second, shared = overlapping_crops(x)
        a = encode(first, None, per_step=True)[:, -shared:]
        b = encode(second, None, per_step=True)[:, :shared]
        return self.weight * hierarchical_loss(a, b, self.alpha)


def window(x: Tensor, starts: Tensor, length: int) -> Tensor:
    """Per row, ``length`` steps of x from ``starts`` (which may lie outside it: zeros there)."""
    index = starts.to(x.device).unsqueeze(-1) + torch.arange(length, device=x.device)
    inside = ((index >= 0) & (index < x.shape[1])).unsqueeze(-1).to(x.dtype)
    rows = torch.arange(len(x), device=x.device).unsqueeze(-1)
    return x[rows, index.clamp(0, x.shape[1] - 1)] * inside


def overlapping_crops(x: Tensor) -> tuple[Tensor, Tensor, int]:
    """TS2Vec's cropping: two random crops of each series, [a1, b1] and [a2, b2] with a1 <= a2 <= b1
    <= b2, at a random shift per series; the first crop's last and the second's first ``shared``
    steps are the same steps of the series."""
    steps = x.shape[1]
    shared = int(torch.randint(2, steps + 1, ()))
    left = int(torch.randint(0, steps - shared + 1, ()))
    right = left + shared
    outer_left = int(torch.randint(0, left + 1, ()))
    outer_right = int(torch.randint(right, steps + 1, ()))
    shift = torch.randint(-outer_left, steps - outer_right + 1, (len(x),))
    return (
        window(x, shift + outer_left, right - outer_left),
        window(x, shift + left, outer_right - left),
        shared,
    )


def hierarchical_loss(a: Tensor, b: Tensor, alpha: float = 0.5) -> Tensor:
    """The instance and temporal contrast of a and b [B, T, C], then of both max-pooled over pairs of
    steps, down to one step; the mean over levels."""
    loss, levels = a.new_zeros(()), 0
    while a.shape[1] > 1:
        loss = loss + alpha * instance_contrast(a, b) + (1 - alpha) * temporal_contrast(a, b)
        a, b = (max_pool1d(z.transpose(1, 2), 2).transpose(1, 2) for z in (a, b))
        levels += 1
    return (loss + alpha * instance_contrast(a, b)) / (levels + 1)


def instance_contrast(a: Tensor, b: Tensor) -> Tensor:
    """At each step, each series against the batch's other series (both crops)."""
    if len(a) < 2:
        return a.new_zeros(())
    return _contrast(torch.cat([a, b]).transpose(0, 1))  # [T, 2B, C]


def temporal_contrast(a: Tensor, b: Tensor) -> Tensor:
    """In each series, each step against the series' other steps (both crops)."""
    return _contrast(torch.cat([a, b], dim=1))  # [B, 2T, C]


def _contrast(z: Tensor) -> Tensor:
    """z [G, 2N, C], two views of N items per group: the cross-entropy of each item's other view
    among the group's other 2N - 1 entries, by dot product."""
    n = z.shape[1] // 2
    # Each entry's similarity with itself set to -inf drops out of the softmax; cutting the diagonal
    # out of the matrix instead (TS2Vec's tril/triu) copies it twice, a tenth of a training step.
    no_self = torch.diag_embed(z.new_full((2 * n,), float("-inf"))).expand(len(z), -1, -1)
    log_p = log_softmax(torch.baddbmm(no_self, z, z.transpose(1, 2)), dim=-1)
    i = torch.arange(n, device=z.device)
    return -(log_p[:, i, n + i].mean() + log_p[:, n + i, i].mean()) / 2

"""Training objectives: what the autoencoder learns from besides reconstructing its input.

An objective is a subclass of ``Objective`` (an ``nn.Module``, so a head it adds trains and lands in
checkpoints), chosen by a YAML in the ``objective`` config group that names it by ``_target_`` and
gives its keyword arguments; seqae passes ``code_size``. seqae's own are in this package
(``seqae/conf/objective/``); one of your own lives in your package and your config folder
(docs/models.md). The two hooks:

- ``corrupt(x, lengths)``: what the encoder sees during training (the target stays ``x``);
- ``extra_loss(encode, x, lengths, code)``: a term added to the reconstruction loss, or None.
  ``encode(x, lengths)`` gives the codes of other series of the batch's kind (e.g. altered ones);
  ``encode(x, lengths, per_step=True)`` the encoder's per-step outputs ``[B, T, C]``, for an encoder
  that has a ``steps(x, lengths)`` method (an objective that needs them sets ``needs_steps = True``,
  and the model checks its encoder at construction).

``x`` is in the units the model trains in, ``[B, T, F]``, padding zeroed; ``lengths`` is ``[B]`` or None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from seqae.errors import ConfigError
from seqae.models.targets import build

Encode = Callable[..., Tensor]  # encode(x, lengths, per_step=False)


class Objective(nn.Module):
    """The base of every objective: as it stands, plain reconstruction (the encoder sees the series as
    they are, and nothing is added)."""

    needs_steps: bool = False  # True: extra_loss calls encode(..., per_step=True)

    # The code's last ``stats_size`` values are each series' own level and scale (model.instance_norm),
    # not learned; the model sets it.
    stats_size: int = 0

    def __init__(self, code_size: int) -> None:
        super().__init__()
        self.code_size = code_size

    def corrupt(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """What the encoder sees during training, ``[B, T, F]`` like ``x`` (the target stays ``x``).

        :param x: the batch in the units the model trains in, padding zeroed.
        :param lengths: ``[B]`` valid steps per series, or None when all are ``T`` long.
        """
        return x

    def extra_loss(self, encode: Encode, x: Tensor, lengths: Tensor | None, code: Tensor) -> Tensor | None:
        """A scalar added to the reconstruction loss, or None for nothing.

        :param encode: ``encode(x, lengths)`` gives codes of other series of the batch's kind (crops,
            altered copies), through the same encoder and per-series scaling.
        :param x: the clean batch, ``[B, T, F]``.
        :param lengths: ``[B]`` or None.
        :param code: the codes ``[B, code_size]`` the decoder reconstructed from (of ``corrupt(x)``).
        """
        return None


def build_objective(spec: dict[str, Any], code_size: int, stats_size: int = 0) -> Objective:
    """The ``Objective`` subclass a ``{"_target_": ...}`` spec names, built with ``code_size``
    (seqae/models/targets.py); ``stats_size`` is how many of the code's last values are not learned."""
    built = build(spec, "objective", code_size=code_size)
    if not isinstance(built, Objective):
        raise ConfigError(
            f"objective._target_={spec['_target_']!r} must subclass seqae.models.objectives.Objective "
            f"(its corrupt and extra_loss hooks are what the model calls)."
        )
    built.stats_size = stats_size
    return built

"""Training objectives: what the autoencoder learns from besides reconstructing its input.

seqae's objectives are modules here, each with a YAML in ``seqae/conf/objective/``; each module
defines ``Objective``, an ``nn.Module`` (so a head it adds trains and lands in checkpoints) built as
``Objective(code_size, **model.objective_args)``. One of your own is a subclass of ``Objective`` in
your own package, chosen by a YAML with its ``_target_`` (docs/models.md). The two hooks:

- ``corrupt(x, lengths)``: what the encoder sees during training (the target stays ``x``);
- ``extra_loss(encode, x, lengths, code)``: a term added to the reconstruction loss, or None.
  ``encode(x, lengths)`` gives the codes of other series of the batch's kind (e.g. altered ones).

``x`` is in the units the model trains in, ``[B, T, F]``, padding zeroed; ``lengths`` is ``[B]`` or None.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from torch import Tensor, nn

from seqae.errors import ConfigError

Encode = Callable[[Tensor, Tensor | None], Tensor]


class Objective(nn.Module):
    """Plain reconstruction: the encoder sees the series as they are, and nothing is added."""

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


def names() -> list[str]:
    """The objectives there are: the modules of this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__))


def build_objective(
    name: str | dict, code_size: int, args: dict | None = None, stats_size: int = 0
) -> Objective:
    """seqae's objective by name (with ``args``), or a ``{"_target_": ...}`` spec of one's own, a
    subclass of ``Objective`` built with ``code_size`` (seqae/models/targets.py)."""
    if isinstance(name, dict):
        from seqae.models.targets import build

        built = build(name, "objective", code_size=code_size)
        if not isinstance(built, Objective):
            raise ConfigError(
                f"objective._target_={name['_target_']!r} must subclass seqae.models.objectives.Objective "
                f"(its corrupt and extra_loss hooks are what the model calls)."
            )
    else:
        if name not in names():
            raise ConfigError(f"model.objective must be one of {names()}, got {name!r}.")
        objective = importlib.import_module(f"{__name__}.{name}").Objective
        try:
            built = objective(code_size, **(args or {}))
        except TypeError as e:
            raise ConfigError(
                f"model.objective_args={dict(args or {})} do not fit objective={name}: {e}"
            ) from None
    built.stats_size = stats_size
    return built

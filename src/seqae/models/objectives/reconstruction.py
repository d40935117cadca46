"""Reconstruction alone: the encoder sees each series as it is (``objective=reconstruction``)."""

from seqae.models.objectives import Objective

__all__ = ["Objective"]

"""Reconstruction alone: the encoder sees each series as it is (``objective=reconstruction``)."""

from seqae.objectives import Objective

__all__ = ["Objective"]

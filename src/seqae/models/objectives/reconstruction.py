"""Reconstruction alone (``objective=reconstruction``): the encoder sees each series as it is and
nothing joins the reconstruction loss, which is what the base class's hooks do."""

from seqae.models.objectives import Objective


class Reconstruction(Objective):
    """The autoencoder's own objective: reconstruct each series from its code."""

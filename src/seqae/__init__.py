"""seqae: sequence autoencoders on PyTorch Lightning and Hydra."""

from __future__ import annotations

from typing import Any

import seqae.resolvers  # noqa: F401  (${seqae.gpus_per_node:...} in conf/hydra/launcher/slurm.yaml)

__all__ = ["RecurrentEncoder", "Run", "SequenceAutoencoder", "SequenceEncoder", "fit", "load"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy, so that `import seqae.evaluation.summary` (or a bad override) does not pay for torch and Lightning.
    if name == "RecurrentEncoder":
        from seqae.models.encoders import RecurrentEncoder

        return RecurrentEncoder
    if name == "SequenceAutoencoder":
        from seqae.training.module import SequenceAutoencoder

        return SequenceAutoencoder
    if name in ("Run", "SequenceEncoder", "fit", "load"):  # the notebook door: seqae/api.py
        from seqae import api

        return getattr(api, name)
    raise AttributeError(f"module 'seqae' has no attribute {name!r}")

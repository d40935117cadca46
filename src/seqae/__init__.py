"""seqae: sequence autoencoders on PyTorch Lightning and Hydra."""

from seqae.encoders import LSTMEncoder
from seqae.model import SequenceAutoencoder

__all__ = ["LSTMEncoder", "SequenceAutoencoder"]
__version__ = "0.1.0"

from seqae.data.datamodule import SequenceData, SequenceDataModule
from seqae.data.sines import SinesDataModule

__all__ = ["SequenceData", "SequenceDataModule", "SinesDataModule"]

from seqae.data.arrays import ArraysDataModule
from seqae.data.datamodule import DataError, SequenceData, SequenceDataModule
from seqae.data.sines import SinesDataModule
from seqae.data.ucr import UCRDataModule

__all__ = [
    "ArraysDataModule",
    "DataError",
    "SequenceData",
    "SequenceDataModule",
    "SinesDataModule",
    "UCRDataModule",
]

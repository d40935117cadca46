"""What the TensorBoard callbacks write, read back with TensorBoard's own reader."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.projector import projector_config_pb2

from seqae.data import SinesDataModule
from seqae.training.callbacks import EmbeddingProjector, ReconstructionPlot, SequenceErrorHistogram
from seqae.training.module import SequenceAutoencoder
from tests.conftest import quiet_trainer, recurrent


def fit_and_test(tmp_path: Path, callbacks: list[L.Callback], logger, max_epochs: int = 2, **trainer_args):
    torch.manual_seed(0)
    dm = SinesDataModule(num_sequences=60, seq_len=10, num_features=3, batch_size=16, seed=0)
    dm.setup()
    model = SequenceAutoencoder(3, **recurrent(6))
    model.set_normalization(*dm.normalization())
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=max_epochs,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        **trainer_args,
    )
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    return model, dm, trainer


def test_codes_land_in_the_projector_with_labels_and_errors_in_a_histogram(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb", version="", default_hp_metric=False)
    callbacks = [
        ReconstructionPlot(every_n_validations=1),
        EmbeddingProjector(split="val"),
        SequenceErrorHistogram(),
    ]
    model, dm, trainer = fit_and_test(tmp_path, callbacks, logger)
    logdir = tmp_path / "tb"

    config = projector_config_pb2.ProjectorConfig()
    from google.protobuf import text_format

    text_format.Parse((logdir / "projector_config.pbtxt").read_text(), config)
    (embedding,) = config.embeddings
    assert embedding.tensor_name == f"val/codes:{trainer.global_step:05d}"  # tag:step
    tensors = np.loadtxt(logdir / embedding.tensor_path, delimiter="\t", ndmin=2)
    val = dm.split_data("val")
    assert tensors.shape == (len(val), model.encoder.code_size)
    metadata = (logdir / embedding.metadata_path).read_text().split()
    assert metadata == [str(i) for i in val.labels.tolist()]  # one class id per point

    acc = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={"histograms": 0, "images": 0}
    ).Reload()
    assert "val/reconstruction" in acc.Tags()["images"]
    (histogram,) = acc.Histograms("test/sequence_mse")
    assert histogram.histogram_value.num == len(dm.split_data("test"))
    assert histogram.step == trainer.global_step


def test_projector_caps_the_number_of_points(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    fit_and_test(tmp_path, [EmbeddingProjector(split="train", max_sequences=7)], logger, max_epochs=1)
    (tensors,) = (tmp_path / "tb").rglob("tensors.tsv")
    assert len(tensors.read_text().splitlines()) == 7


@pytest.mark.parametrize("logger", [False, "csv"])
def test_without_tensorboard_the_callbacks_do_nothing(tmp_path, logger):
    logger = CSVLogger(tmp_path, name="csv") if logger == "csv" else False
    callbacks = [EmbeddingProjector(), SequenceErrorHistogram()]
    fit_and_test(tmp_path, callbacks, logger, max_epochs=1)
    assert not list(tmp_path.rglob("projector_config.pbtxt")) and not list(tmp_path.rglob("events.out.*"))


def test_fast_dev_run_writes_nothing(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    fit_and_test(tmp_path, [EmbeddingProjector(), SequenceErrorHistogram()], logger, fast_dev_run=True)
    assert not (tmp_path / "tb").exists()

"""Callbacks that show a run in TensorBoard: reconstruction plots, the embedding projector, error histograms."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger


def tensorboard_writer(trainer: L.Trainer):
    """The SummaryWriter of the run's TensorBoard logger, or None when there is none."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class ReconstructionPlot(L.Callback):
    """At the first validation of a fit and every ``every_n_validations`` after it, plot a few
    validation sequences (solid) against their reconstructions (dashed), in original units and
    order, as the image ``val/reconstruction``.
    """

    def __init__(self, every_n_validations: int = 5, num_sequences: int = 4, num_channels: int = 3) -> None:
        self.every_n_validations, self.num_sequences, self.num_channels = (
            every_n_validations,
            num_sequences,
            num_channels,
        )
        self.validations = 0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self.validations += 1
        if not trainer.is_global_zero or (self.validations - 1) % self.every_n_validations:
            return
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        batch = next(iter(trainer.datamodule.val_dataloader()))
        x = batch["x"][: self.num_sequences].to(pl_module.device)
        lengths = batch.get("lengths")
        lengths = None if lengths is None else lengths[: self.num_sequences]
        with torch.no_grad():
            recon = pl_module(x, lengths).float().cpu()
        writer.add_figure(
            "val/reconstruction",
            plot_reconstructions(x.cpu(), recon, lengths, self.num_channels),
            global_step=trainer.global_step,
        )


def plot_reconstructions(x: torch.Tensor, recon: torch.Tensor, lengths: torch.Tensor | None, channels: int):
    import matplotlib  # imported here: plotting should not slow down start-up

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, c = x.shape[0], min(channels, x.shape[-1])
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.8 * n), squeeze=False, sharex=True)
    for i, ax in enumerate(axes[:, 0]):
        t = int(lengths[i]) if lengths is not None else x.shape[1]
        for ch in range(c):
            (line,) = ax.plot(x[i, :t, ch].numpy(), lw=1.2)
            ax.plot(recon[i, :t, ch].numpy(), "--", lw=1.2, color=line.get_color())
        ax.set_ylabel(f"seq {i}")
    axes[-1, 0].set_xlabel("step (solid: input, dashed: reconstruction)")
    fig.subplots_adjust(left=0.1, right=0.98, top=0.98, bottom=0.12, hspace=0.08)  # tight_layout: 0.1 s each
    return fig


class EmbeddingProjector(L.Callback):
    """At the end of fit, the codes of the ``split`` sequences (the first ``max_sequences`` of them)
    in TensorBoard's Embedding Projector as ``<split>/codes``, labelled by class when the data has labels.
    """

    def __init__(self, split: str = "val", max_sequences: int = 2000) -> None:
        self.split, self.max_sequences = split, max_sequences

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard_writer(trainer)
        if writer is None or not trainer.is_global_zero or trainer.datamodule is None:
            return
        from seqae.evaluation.codes import encode_split

        codes, labels = encode_split(
            pl_module, trainer.datamodule, self.split, max_sequences=self.max_sequences
        )
        if not len(codes):  # e.g. data.val_fraction=0
            return
        metadata = None
        if labels is not None:
            names = getattr(trainer.datamodule, "label_names", None)
            metadata = [str(names[i]) if names else str(i) for i in labels.tolist()]
        writer.add_embedding(
            codes, metadata=metadata, tag=f"{self.split}/codes", global_step=trainer.global_step
        )


class SequenceErrorHistogram(L.Callback):
    """After testing, the histogram ``test/sequence_mse`` of each test sequence's reconstruction MSE
    (normalised units, like ``test/mse``): a long right tail is where the encoder fails."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard_writer(trainer)
        if writer is None or not trainer.is_global_zero or trainer.datamodule is None:
            return
        from seqae.evaluation.probes import reconstruction_errors

        if not len(trainer.datamodule.split_data("test")):
            return
        errors, _, _ = reconstruction_errors(pl_module, trainer.datamodule, "test")
        writer.add_histogram("test/sequence_mse", errors, global_step=trainer.global_step)

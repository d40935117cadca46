"""Callbacks that show a run in TensorBoard: reconstruction plots."""

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
    """Every ``every_n_epochs`` validation epochs, plot a few validation sequences (solid) against
    their reconstructions (dashed), in original units and order, as the image ``val/reconstruction``.
    """

    def __init__(self, every_n_epochs: int = 5, num_sequences: int = 4, num_channels: int = 3) -> None:
        self.every_n_epochs, self.num_sequences, self.num_channels = (
            every_n_epochs,
            num_sequences,
            num_channels,
        )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch == trainer.max_epochs - 1
        if (
            trainer.sanity_checking
            or not trainer.is_global_zero
            or not (epoch % self.every_n_epochs == 0 or last)
        ):
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
    fig.tight_layout()
    return fig

"""SequenceAutoencoder: an encoder and a decoder trained on masked reconstruction MSE."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MinMetric

from seqae.decoders import build_decoder
from seqae.encoders import LSTMEncoder, steps_mask

SCHEDULERS = (None, "plateau", "cosine")


class SequenceAutoencoder(L.LightningModule):
    """Built from primitive hyper-parameters only, so ``load_from_checkpoint(path)`` needs nothing else.

    Inputs are normalised inside the model (``norm_loc``/``norm_scale`` buffers, fitted on the
    training split and saved in the checkpoint), so ``encode`` takes data in its original units.
    ``reverse_target`` trains the decoder to emit the sequence backwards (Srivastava et al. 2015);
    ``reconstruct`` always returns it in the original order.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        readout: str = "hidden",
        cell: str = "lstm",
        bidirectional: bool = False,
        dropout: float = 0.0,
        latent_size: int | None = None,
        decoder: str = "repeat",
        reverse_target: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: str | None = None,
    ) -> None:
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise ValueError(f"model.scheduler must be one of {SCHEDULERS}, got {scheduler!r}.")
        if not (isinstance(lr, int | float) and lr > 0):
            raise ValueError(f"model.lr must be a positive number, got {lr!r}.")
        self.save_hyperparameters(logger=False)
        self.encoder = LSTMEncoder(
            input_size,
            hidden_size,
            num_layers,
            readout,
            cell=cell,
            bidirectional=bidirectional,
            dropout=dropout,
            latent_size=latent_size,
        )
        self.decoder = build_decoder(
            decoder, self.encoder.code_size, hidden_size, input_size, num_layers, cell
        )
        self.register_buffer("norm_loc", torch.zeros(input_size))
        self.register_buffer("norm_scale", torch.ones(input_size))
        self.metrics = torch.nn.ModuleDict(
            {
                stage: torch.nn.ModuleDict({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})
                for stage in ("val", "test")
            }
        )
        self.val_loss_best = MinMetric()

    # -- the model -------------------------------------------------------------------------
    def set_normalization(self, loc: Tensor, scale: Tensor) -> None:
        """Per-feature statistics of the training split: the model sees (x - loc) / scale."""
        self.norm_loc.copy_(torch.as_tensor(loc, dtype=self.norm_loc.dtype))
        self.norm_scale.copy_(torch.as_tensor(scale, dtype=self.norm_scale.dtype))

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.norm_loc) / self.norm_scale

    def encode(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x in original units [B, T, F] -> codes [B, C]."""
        return self.encoder(self.normalize(x), lengths)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x in original units -> reconstruction in original units and order (free-running)."""
        recon = self.decoder(self.encode(x, lengths), x.shape[1])
        if self.hparams.reverse_target:
            recon = reverse_valid_steps(recon, lengths)
        return recon * self.norm_scale + self.norm_loc

    def _reconstruct(self, batch: dict[str, Tensor], teacher_forcing: bool) -> tuple[Tensor, Tensor]:
        """Normalised target and reconstruction, both in the order the decoder emits."""
        x, lengths = self.normalize(batch["x"]), batch.get("lengths")
        target = reverse_valid_steps(x, lengths) if self.hparams.reverse_target else x
        code = self.encoder(x, lengths)
        recon = self.decoder(code, x.shape[1], target if teacher_forcing else None)
        return target, recon.float()  # under autocast the LSTM answers in low precision

    # -- training --------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        target, recon = self._reconstruct(batch, teacher_forcing=True)
        loss = masked_mse(recon, target, batch.get("lengths"))
        self.log("train/loss", loss, batch_size=target.shape[0])
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> None:
        lengths = batch.get("lengths")
        target, recon = self._reconstruct(batch, teacher_forcing=True)
        loss = masked_mse(recon, target, lengths)
        self.log(f"{stage}/loss", loss, batch_size=target.shape[0], sync_dist=True)
        if self.hparams.decoder != "repeat":  # metrics on what the decoder generates by itself
            _, recon = self._reconstruct(batch, teacher_forcing=False)
        if lengths is not None:
            mask = steps_mask(lengths, target.shape[1])
            recon, target = recon[mask], target[mask]
        for name, metric in self.metrics[stage].items():
            metric(recon, target)
            self.log(f"{stage}/{name}", metric)

    def on_train_start(self) -> None:
        self.val_loss_best.reset()  # forget what the sanity check saw

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_loss_best(self.trainer.callback_metrics["val/loss"])
        best = self.val_loss_best.compute()
        self.log("val/loss_best", best, sync_dist=True)
        self.log("hp/val_loss_best", best, sync_dist=True)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler is None:
            return optimizer
        if hp.scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
        max_epochs = (
            self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 100
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def masked_mse(recon: Tensor, target: Tensor, lengths: Tensor | None) -> Tensor:
    """Mean squared error over valid steps only (padding never counts)."""
    if lengths is None:
        return torch.nn.functional.mse_loss(recon, target)
    mask = steps_mask(lengths, target.shape[1]).unsqueeze(-1).to(recon.dtype)
    return ((recon - target) ** 2 * mask).sum() / (mask.sum() * target.shape[-1])


def reverse_valid_steps(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence's valid steps in time; padding stays at the end."""
    if lengths is None:
        return x.flip(1)
    t = torch.arange(x.shape[1], device=x.device)
    lengths = lengths.to(x.device).unsqueeze(-1)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # [B, T]
    return x.gather(1, index.unsqueeze(-1).expand_as(x))

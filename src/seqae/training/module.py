"""SequenceAutoencoder: the autoencoder (seqae/models/autoencoder.py) as a LightningModule: its optimizer and
schedule, the fast path's steps, validation and test metrics, and the RNG states in checkpoints."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MinMetric

from seqae.errors import ConfigError, TrainingDivergedError
from seqae.models.autoencoder import Autoencoder
from seqae.models.decoders import RepeatDecoder
from seqae.models.layers import masked_mse, steps_mask
from seqae.training import fast_path
from seqae.training.checkpoints import earlier_specs, read_checkpoint, restore_rng_states, rng_states

__all__ = ["SequenceAutoencoder"]

SCHEDULERS = (None, "plateau", "cosine")


class SequenceAutoencoder(Autoencoder, L.LightningModule):
    """The ``Autoencoder`` (its arguments are documented there) trained by Lightning: Adam at ``lr``
    with ``weight_decay``, a ``scheduler`` (``cosine`` over the run's steps or ``plateau`` on
    val/loss), ``gradient_clip_val``, and ``steps_per_call`` optimizer steps per Lightning call
    (seqae/training/fast_path.py). Built from primitive hyper-parameters only, so ``load(path)``
    needs nothing else.
    """

    def __init__(
        self,
        input_size: int,
        encoder: dict[str, Any] | None = None,
        decoder: dict[str, Any] | None = None,
        objective: dict[str, Any] | None = None,
        reverse_target: bool = False,
        instance_norm: bool = False,
        sequence_length: int | None = None,
        max_recurrent_steps: int | None = None,
        conv_channels: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: str | None = None,
        steps_per_call: int = 1,
        gradient_clip_val: float | None = None,
    ) -> None:
        if not isinstance(steps_per_call, int) or isinstance(steps_per_call, bool) or steps_per_call < 1:
            raise ConfigError(f"model.steps_per_call must be a positive integer, got {steps_per_call!r}.")
        if gradient_clip_val is not None and not (
            isinstance(gradient_clip_val, int | float) and gradient_clip_val > 0
        ):
            raise ConfigError(
                f"model.gradient_clip_val must be a positive number or null, got {gradient_clip_val!r}."
            )
        if scheduler not in SCHEDULERS:
            raise ConfigError(f"model.scheduler must be one of {SCHEDULERS}, got {scheduler!r}.")
        if not (isinstance(lr, int | float) and lr > 0):
            raise ConfigError(f"model.lr must be a positive number, got {lr!r}.")
        super().__init__(
            input_size,
            encoder=encoder,
            decoder=decoder,
            objective=objective,
            reverse_target=reverse_target,
            instance_norm=instance_norm,
            sequence_length=sequence_length,
            max_recurrent_steps=max_recurrent_steps,
            conv_channels=conv_channels,
        )
        self.save_hyperparameters(logger=False)
        self.metrics = torch.nn.ModuleDict(
            {
                stage: torch.nn.ModuleDict({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})
                for stage in ("val", "test")
            }
        )
        self.val_loss_best = MinMetric()
        # steps_per_call > 1: several optimizer steps per training_step call (seqae/training/fast_path.py).
        self.automatic_optimization = steps_per_call == 1
        if steps_per_call > 1:
            # Lightning hands training_step the loader's iterator when its signature asks for one.
            self.training_step = self._training_steps
        self.val_loss_best.persistent(True)  # saved in checkpoints, so a resumed run keeps its best

    @classmethod
    def load(cls, path: str | Path, map_location: Any = None) -> SequenceAutoencoder:
        """The model a checkpoint holds, read with ``weights_only=True`` (it cannot run code), also
        when an earlier seqae wrote it (``seqae.training.checkpoints.earlier_specs``)."""
        specs = earlier_specs(read_checkpoint(path)["hyper_parameters"])
        # load_from_checkpoint drops saved keys __init__ no longer takes and uses these in their place.
        return cls.load_from_checkpoint(path, map_location=map_location, weights_only=True, **specs)

    # -- training --------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, recon = self.training_loss(batch)
        if not math.isfinite(loss.item()):
            raise TrainingDivergedError(self._non_finite_report(batch, recon, loss))
        self.log("train/loss", loss, batch_size=recon.shape[0])
        return loss

    def _training_steps(self, dataloader_iter: Any) -> None:
        fast_path.training_steps(self, dataloader_iter)

    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Automatic optimization (steps_per_call=1): model.gradient_clip_val clips as the fast path does;
        # Trainer(gradient_clip_val=...) still works here as in any Lightning module.
        clip = self.hparams.get("gradient_clip_val") or gradient_clip_val
        self.clip_gradients(
            optimizer, gradient_clip_val=clip, gradient_clip_algorithm=gradient_clip_algorithm
        )

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # The fast path off its lean path (DDP, other precision plugins): Lightning calls this inside
        # optimizer.step(), after 16-mixed's GradScaler has unscaled the gradients. Clipping before
        # step() would clip gradients still multiplied by the loss scale (2**16 at first).
        if not self.automatic_optimization and (clip := self.hparams.gradient_clip_val):
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        # Automatic optimization: Lightning calls this after every step. The plateau scheduler is
        # stepped on each validation's val/loss instead (on_validation_epoch_end), as on the fast path.
        if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()

    def _non_finite_report(
        self, batch: dict[str, Tensor], recon: Tensor | None, loss: Tensor, step: int | None = None
    ) -> str:
        def finite(t: Tensor) -> str:
            return (
                "finite"
                if torch.isfinite(t).all()
                else f"{(~torch.isfinite(t)).sum().item()} non-finite values"
            )

        bad_params = [n for n, p in self.named_parameters() if not torch.isfinite(p).all()]
        # On the fast path the losses are checked after the call's last step (step is given).
        reconstruction = "" if recon is None else f"reconstruction: {finite(recon)}; "
        after = "" if step is None else " after the call's last step"
        return (
            f"The training loss became {loss.item()} at epoch {self.current_epoch}, global step "
            f"{self.global_step if step is None else step}. Batch inputs x: {finite(batch['x'])}; normalised "
            f"inputs: {finite(self.normalize(batch['x']))}; {reconstruction}parameters with non-finite "
            f"values{after}: {bad_params or 'none'}. Training stopped so that no checkpoint holds NaNs; "
            f"the last good one is checkpoints/last.ckpt. Try a lower model.lr, a smaller "
            f"model.gradient_clip_val, clean data, or +trainer.detect_anomaly=true to find the operation."
        )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> None:
        x, lengths = batch["x"], batch.get("lengths")
        target, recon = self.reconstruction(x, lengths, teacher_forcing=True)
        loss = masked_mse(recon, target, lengths)
        self.log(f"{stage}/loss", loss, batch_size=target.shape[0], sync_dist=True)
        if not isinstance(self.decoder, RepeatDecoder):  # metrics on what the decoder generates by itself
            _, recon = self.reconstruction(x, lengths)
        if lengths is not None:
            mask = steps_mask(lengths, target.shape[1])
            recon, target = recon[mask], target[mask]
        for metric in self.metrics[stage].values():
            metric.update(recon, target)

    # The metrics are updated per batch and logged once an epoch: a self.log of a Metric moves it to
    # the device again (0.3 ms a call), and forward() computes a per-batch value nobody reads.
    def _reset_metrics(self, stage: str) -> None:
        # Fresh states in this loop's grad mode: a validate() leaves inference tensors, which the
        # fit's validation (run under no_grad, not inference mode) could not update in place.
        for metric in self.metrics[stage].values():
            metric.reset()

    def _log_metrics(self, stage: str) -> None:
        for name, metric in self.metrics[stage].items():
            self.log(f"{stage}/{name}", metric)

    def on_validation_epoch_start(self) -> None:
        self._reset_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._reset_metrics("test")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        if self.trainer.sanity_checking or self.trainer.state.fn != "fit":
            return  # the best is over the epochs of a fit, not a sanity check or a lone validate()
        val_loss = self.trainer.callback_metrics["val/loss"]
        scheduler = self.lr_schedulers()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss)
        self.val_loss_best(val_loss)
        best = self.val_loss_best.compute()
        self.log("val/loss_best", best, sync_dist=True)
        self.log("hp/val_loss_best", best, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Only when resuming a fit: merely loading a model must not reseed the caller's RNGs.
        if "rng_states" in checkpoint and self._trainer is not None and self.trainer.state.fn == "fit":
            restore_rng_states(checkpoint["rng_states"])

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler is None:
            return optimizer
        if hp.scheduler == "plateau":  # stepped after each validation, on val/loss
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
            monitor = {"monitor": "val/loss", "strict": False} if self.automatic_optimization else {}
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **monitor}}
        # Cosine decay over the run's optimizer steps (trainer.max_steps, or max_epochs of batches).
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps):  # trainer.max_time alone: no length to anneal over
            rank_zero_warn(
                "model.scheduler=cosine needs a budget in steps or epochs; under trainer.max_time "
                "alone the learning rate stays at model.lr."
            )
            return optimizer
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(steps)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

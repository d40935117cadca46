"""SequenceAutoencoder: an encoder and a decoder trained on masked reconstruction MSE."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MinMetric

from seqae import fast_path
from seqae.checkpoints import restore_rng_states, rng_states
from seqae.decoders import RepeatDecoder, build_decoder
from seqae.encoders import steps_mask
from seqae.errors import ConfigError, TrainingDivergedError
from seqae.objectives import Objective, build_objective
from seqae.targets import build

SCHEDULERS = (None, "plateau", "cosine")
# instance_norm: a series flatter than this variance (in normalised units) is scaled as if it had it
INSTANCE_VAR_FLOOR = 1e-6


class SequenceAutoencoder(L.LightningModule):
    """Built from primitive hyper-parameters only, so ``load_from_checkpoint(path)`` needs nothing else.

    Inputs are normalised inside the model (``norm_loc``/``norm_scale`` buffers, fitted on the
    training split and saved in the checkpoint), so ``encode`` takes data in its original units.

    - ``instance_norm``: each series is also scaled by its own mean and standard deviation (per
      feature, over its valid steps) before the encoder sees it, and those two statistics join the
      code (RevIN, Kim et al. 2022): the recurrent layers see shapes, the code keeps the levels.
      The decoder reconstructs the scaled series; ``forward`` undoes the scaling with the code's
      statistics.
    - ``max_recurrent_steps``: a series longer than this is read ``patch_size`` steps at a time
      (``ceil(sequence_length / max_recurrent_steps)``, each recurrent step a patch of
      ``patch_size x input_size`` values), by the encoder and the decoder alike.
    - ``decoder_input_size``: the repeat decoder reads a linear projection of the code to this
      many values, not the code itself (seqae/decoders.py): the same reconstruction from a wide
      code, at a fraction of the cost.
    - ``reverse_target`` trains the decoder to emit the sequence backwards (Srivastava et al.
      2015); ``forward`` always returns it in the original order.
    - ``objective`` (seqae/objectives/): what the encoder sees and what is added to the
      reconstruction loss, e.g. ``denoising`` or DTCR's ``fake_samples``.
    - ``encoder``, ``decoder``, ``objective`` as ``{"_target_": "mylab.ConvEncoder", **kwargs}``: a
      module of the researcher's own (seqae/targets.py; docs/models.md gives the contracts). Without
      an ``encoder`` spec the encoder is seqae's recurrent one, built the same way from
      ``hidden_size``, ``num_layers``, ``readout``, ``cell``, ``bidirectional``, ``dropout`` and
      ``latent_size``.
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
        decoder: str | dict[str, Any] = "repeat",
        decoder_input_size: int | None = None,
        reverse_target: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: str | None = None,
        steps_per_call: int = 1,
        gradient_clip_val: float | None = None,
        instance_norm: bool = False,
        sequence_length: int | None = None,
        max_recurrent_steps: int | None = None,
        objective: str | dict[str, Any] = "reconstruction",
        objective_args: dict[str, Any] | None = None,
        encoder: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
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
        if max_recurrent_steps is not None and not (
            isinstance(max_recurrent_steps, int) and max_recurrent_steps >= 1
        ):
            raise ConfigError(
                f"model.max_recurrent_steps must be a positive integer or null, got {max_recurrent_steps!r}."
            )
        self.save_hyperparameters(logger=False)
        self.patch_size = (
            max(1, math.ceil(sequence_length / max_recurrent_steps))
            if max_recurrent_steps and sequence_length
            else 1
        )
        steps_in = input_size * self.patch_size  # the values of one recurrent step
        self.reads_as_is = not instance_norm and self.patch_size == 1  # no scaling, no patches
        recurrent = dict(
            _target_="seqae.encoders.LSTMEncoder",
            hidden_size=hidden_size,
            num_layers=num_layers,
            readout=readout,
            cell=cell,
            bidirectional=bidirectional,
            dropout=dropout,
            latent_size=latent_size,
        )
        self.encoder = build(encoder or recurrent, "encoder", input_size=steps_in)
        encoded = getattr(self.encoder, "code_size", None)
        if not isinstance(encoded, int) or encoded < 1:
            raise ConfigError(
                f"encoder {type(self.encoder).__qualname__} has code_size={encoded!r}; an encoder sets "
                f"self.code_size, the width of the [B, code_size] codes its forward returns."
            )
        self.code_size = encoded + (2 * input_size if instance_norm else 0)
        if isinstance(decoder, dict):
            self.decoder = build(decoder, "decoder", code_size=self.code_size, output_size=steps_in)
        else:
            self.decoder = build_decoder(
                decoder, self.code_size, hidden_size, steps_in, num_layers, cell, decoder_input_size
            )
        stats_size = self.code_size - encoded
        if isinstance(objective, dict):
            self.objective = build(objective, "objective", code_size=self.code_size)
            if not isinstance(self.objective, Objective):
                raise ConfigError(
                    f"objective._target_={objective['_target_']!r} must subclass seqae.objectives.Objective "
                    f"(its corrupt and extra_loss hooks are what the model calls)."
                )
            self.objective.stats_size = stats_size
        else:
            self.objective = build_objective(objective, self.code_size, objective_args, stats_size=stats_size)
        self.register_buffer("norm_loc", torch.zeros(input_size))
        self.register_buffer("norm_scale", torch.ones(input_size))
        self.metrics = torch.nn.ModuleDict(
            {
                stage: torch.nn.ModuleDict({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})
                for stage in ("val", "test")
            }
        )
        self.val_loss_best = MinMetric()
        # steps_per_call > 1: several optimizer steps per training_step call (seqae/fast_path.py).
        self.automatic_optimization = steps_per_call == 1
        if steps_per_call > 1:
            # Lightning hands training_step the loader's iterator when its signature asks for one.
            self.training_step = self._training_steps
        self.val_loss_best.persistent(True)  # saved in checkpoints, so a resumed run keeps its best

    # -- the model -------------------------------------------------------------------------
    def set_normalization(self, loc: Tensor, scale: Tensor) -> None:
        """Per-feature statistics of the training split: the model sees (x - loc) / scale."""
        self.norm_loc.copy_(torch.as_tensor(loc, dtype=self.norm_loc.dtype))
        self.norm_scale.copy_(torch.as_tensor(scale, dtype=self.norm_scale.dtype))

    def normalize(self, x: Tensor) -> Tensor:
        # Dividing in place, into the subtraction's own new tensor, allocates once instead of twice:
        # the same numbers, and about 1% off encoding a seed-sized split (normalised all at once).
        return (x - self.norm_loc).div_(self.norm_scale)

    def encode(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x in original units [B, T, F] -> codes [B, C]."""
        return self.encode_normalized(self.normalize(x), lengths)

    def encode_normalized(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x already normalised (``normalize``) -> codes [B, C]."""
        if self.reads_as_is:  # the encoder's own call, as a hand-written loop makes it (scripts/benchmark.py)
            return self.encoder(x, lengths)
        shape, stats = self.scale_series(x, lengths)
        return self._encode(shape, lengths, stats)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x in original units -> reconstruction in original units and order (free-running)."""
        shape, stats = self.scale_series(self.normalize(x), lengths)
        code = self._encode(shape, lengths, stats)
        recon = self._decode(code, x.shape[1], None)
        if self.hparams.reverse_target:
            recon = reverse_valid_steps(recon, lengths)
        if stats is not None:  # the code's own statistics give each series its level and scale back
            loc, log_scale = stats.to(recon.dtype).chunk(2, dim=-1)
            recon = recon * log_scale.exp().unsqueeze(1) + loc.unsqueeze(1)
        return recon * self.norm_scale + self.norm_loc

    def reconstruction(
        self, x: Tensor, lengths: Tensor | None = None, teacher_forcing: bool = False
    ) -> tuple[Tensor, Tensor]:
        """x in original units -> (target, reconstruction) in the units and order the model trains in:
        normalised, scaled per series with ``instance_norm``, reversed with ``reverse_target``."""
        shape, stats = self.scale_series(self.normalize(x), lengths)
        target = reverse_valid_steps(shape, lengths) if self.hparams.reverse_target else shape
        code = self._encode(shape, lengths, stats)
        recon = self._decode(code, x.shape[1], target if teacher_forcing else None)
        return target, recon.to(target.dtype)  # under autocast the LSTM answers in bf16/fp16

    def training_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The objective's loss on a batch, and the reconstruction (for reports of non-finite losses)."""
        x, lengths = batch["x"], batch.get("lengths")
        shape, stats = self.scale_series(self.normalize(x), lengths)
        target = reverse_valid_steps(shape, lengths) if self.hparams.reverse_target else shape
        code = self._encode(self.objective.corrupt(shape, lengths), lengths, stats)
        recon = self._decode(code, x.shape[1], target).to(target.dtype)
        loss = masked_mse(recon, target, lengths)
        extra = self.objective.extra_loss(lambda s, n: self._encode(s, n, stats), shape, lengths, code)
        return (loss if extra is None else loss + extra), recon

    def scale_series(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """With ``instance_norm``: each series over its own valid steps' mean and standard deviation,
        and [mean, log std] per feature [B, 2F]; otherwise x as it is, and None."""
        if not self.hparams.instance_norm:
            return x, None
        if lengths is None:
            loc, var = x.mean(dim=1), x.var(dim=1, unbiased=False)
            mask = None
        else:
            mask = steps_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
            count = lengths.to(x.dtype).unsqueeze(-1)
            loc = (x * mask).sum(dim=1) / count
            var = (((x - loc.unsqueeze(1)) * mask) ** 2).sum(dim=1) / count
        scale = var.clamp_min(INSTANCE_VAR_FLOOR).sqrt()
        shape = (x - loc.unsqueeze(1)) / scale.unsqueeze(1)
        if mask is not None:
            shape = shape * mask  # padding stays zero
        return shape, torch.cat([loc, scale.log()], dim=-1)

    def _encode(self, shape: Tensor, lengths: Tensor | None, stats: Tensor | None) -> Tensor:
        code = self.encoder(*self._patch(shape, lengths))
        return code if stats is None else torch.cat([code, stats.to(code.dtype)], dim=-1)

    def _decode(self, code: Tensor, steps: int, target: Tensor | None) -> Tensor:
        """The decoder's [B, steps, F]: it emits ``patch_size`` steps per recurrent step."""
        if self.patch_size == 1:
            return self.decoder(code, steps, target)
        patches = -(-steps // self.patch_size)
        recon = self.decoder(code, patches, None if target is None else self._patch(target, None)[0])
        recon = recon.reshape(recon.shape[0], patches * self.patch_size, -1)
        return recon if recon.shape[1] == steps else recon[:, :steps].contiguous()

    def _patch(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """[B, T, F] -> [B, ceil(T / p), p * F] (zero-padded), and each sequence's length in patches."""
        p = self.patch_size
        if p == 1:
            return x, lengths
        steps = x.shape[1]
        if steps % p:
            x = torch.nn.functional.pad(x, (0, 0, 0, p - steps % p))
        x = x.reshape(x.shape[0], x.shape[1] // p, p * x.shape[2])
        return x, None if lengths is None else torch.div(lengths + p - 1, p, rounding_mode="floor")

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

"""SequenceAutoencoder: an encoder and a decoder trained on masked reconstruction MSE."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MinMetric

from seqae.checkpoints import restore_rng_states, rng_states
from seqae.decoders import build_decoder
from seqae.encoders import LSTMEncoder, steps_mask
from seqae.objectives import build_objective

SCHEDULERS = (None, "plateau", "cosine")
# instance_norm: a series flatter than this variance (in normalised units) is scaled as if it had it
INSTANCE_VAR_FLOOR = 1e-6

# steps_per_call > 1 asks Lightning for the loader's iterator (stable in practice since 2.0), and
# Lightning says so on every fit.
warnings.filterwarnings("ignore", message="Found `dataloader_iter` argument in the `training_step`")
warnings.filterwarnings("ignore", message="You are using the `dataloader_iter` step flavor")
# Under automatic optimization Lightning offers the plateau scheduler every step, before the first
# validation too; the model steps it on each validation itself (lr_scheduler_step).
warnings.filterwarnings(
    "ignore", message="ReduceLROnPlateau conditioned on metric val/loss which is not available"
)


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
    - ``reverse_target`` trains the decoder to emit the sequence backwards (Srivastava et al.
      2015); ``forward`` always returns it in the original order.
    - ``objective`` (seqae/objectives/): what the encoder sees and what is added to the
      reconstruction loss, e.g. ``denoising`` or DTCR's ``fake_samples``.
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
        steps_per_call: int = 1,
        gradient_clip_val: float | None = None,
        instance_norm: bool = False,
        sequence_length: int | None = None,
        max_recurrent_steps: int | None = None,
        objective: str = "reconstruction",
        objective_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(steps_per_call, int) or isinstance(steps_per_call, bool) or steps_per_call < 1:
            raise ValueError(f"model.steps_per_call must be a positive integer, got {steps_per_call!r}.")
        if gradient_clip_val is not None and not (
            isinstance(gradient_clip_val, int | float) and gradient_clip_val > 0
        ):
            raise ValueError(
                f"model.gradient_clip_val must be a positive number or null, got {gradient_clip_val!r}."
            )
        if scheduler not in SCHEDULERS:
            raise ValueError(f"model.scheduler must be one of {SCHEDULERS}, got {scheduler!r}.")
        if not (isinstance(lr, int | float) and lr > 0):
            raise ValueError(f"model.lr must be a positive number, got {lr!r}.")
        if max_recurrent_steps is not None and not (
            isinstance(max_recurrent_steps, int) and max_recurrent_steps >= 1
        ):
            raise ValueError(
                f"model.max_recurrent_steps must be a positive integer or null, got {max_recurrent_steps!r}."
            )
        self.save_hyperparameters(logger=False)
        self.patch_size = (
            max(1, math.ceil(sequence_length / max_recurrent_steps))
            if max_recurrent_steps and sequence_length
            else 1
        )
        steps_in = input_size * self.patch_size  # the values of one recurrent step
        self.encoder = LSTMEncoder(
            steps_in,
            hidden_size,
            num_layers,
            readout,
            cell=cell,
            bidirectional=bidirectional,
            dropout=dropout,
            latent_size=latent_size,
        )
        self.code_size = self.encoder.code_size + (2 * input_size if instance_norm else 0)
        self.decoder = build_decoder(decoder, self.code_size, hidden_size, steps_in, num_layers, cell)
        self.objective = build_objective(objective, self.code_size, objective_args)
        self.register_buffer("norm_loc", torch.zeros(input_size))
        self.register_buffer("norm_scale", torch.ones(input_size))
        self.metrics = torch.nn.ModuleDict(
            {
                stage: torch.nn.ModuleDict({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})
                for stage in ("val", "test")
            }
        )
        self.val_loss_best = MinMetric()
        # The fast path: Lightning's per-step machinery (hooks, closures, logging) costs about 30% of a
        # small model's step (scripts/benchmark.py), so with steps_per_call=k each training_step call
        # takes k batches from the loader and makes k optimizer steps itself (manual optimization).
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
            raise FloatingPointError(self._non_finite_report(batch, recon, loss))
        self.log("train/loss", loss, batch_size=recon.shape[0])
        return loss

    def _training_steps(self, dataloader_iter: Any) -> None:
        """Up to ``steps_per_call`` optimizer steps, each on the next batch: what a hand-written loop does."""
        optimizer, trainer = self.optimizers(), self.trainer
        clip = self.hparams.gradient_clip_val
        # One device, in 32-bit or mixed precision: Lightning's backward/clip/step wrappers then add
        # only the per-step callback hooks (on_before/after_backward, on_before_optimizer_step), about
        # 10% of a small model's step. The fast path skips them and does what the precision plugin
        # does: autocast is already on (Lightning calls training_step inside it), and for 16-mixed its
        # GradScaler scales the loss and unscales the gradients before clipping. DDP and other
        # precision plugins (64-true, FSDP, ...) keep Lightning's wrappers.
        plugin = trainer.precision_plugin
        lean = type(plugin) in (Precision, MixedPrecision) and type(trainer.strategy) is SingleDeviceStrategy
        scaler = getattr(plugin, "scaler", None)
        # What the optimizer steps is what is clipped; self.parameters() would walk every submodule
        # (the torchmetrics ones too) on each step, 30 us of a small model's 4 ms step.
        params = [p for group in optimizer.param_groups for p in group["params"]]
        scheduler = self.lr_schedulers()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler = None  # stepped after each validation
        steps = min(self.hparams.steps_per_call, steps_until_lightning_acts(trainer))
        # The call's batches are fetched back to back (the epoch's last call gets what is left): the
        # loader's Python code then stays in the CPU's caches, and a fetch costs about half of what
        # it costs between a backward and the next forward (70 us against 125 us, seed-sized). Large
        # batches come in groups of at most FETCH_AHEAD_BYTES, so a call never holds all of them.
        losses, sequences = [], 0
        batches = (batch for batch, _, _ in itertools.islice(dataloader_iter, max(steps, 0)))
        for group in fetch_groups(batches, FETCH_AHEAD_BYTES):
            group_losses = []
            for batch in group:
                if lean:  # what Lightning's transfer hooks do for this module's flat dict of tensors
                    batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                else:
                    batch = trainer.strategy.batch_to_device(trainer.precision_plugin.convert_input(batch))
                loss, _ = self.training_loss(batch)
                optimizer.zero_grad(set_to_none=True)
                if lean:
                    (loss if scaler is None else scaler.scale(loss)).backward()
                    if clip:
                        if scaler is not None:
                            scaler.unscale_(optimizer.optimizer)
                        torch.nn.utils.clip_grad_norm_(params, clip)
                    optimizer._on_before_step()  # Lightning's step counter: trainer.global_step, max_steps
                    if scaler is None:
                        optimizer.optimizer.step()
                    else:  # skips the step when the gradients overflowed, and adapts the scale
                        scaler.step(optimizer.optimizer)
                        scaler.update()
                    optimizer._on_after_step()
                else:  # clips in on_before_optimizer_step, once 16-mixed's scaler has unscaled the gradients
                    self.manual_backward(loss)
                    optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                group_losses.append(loss.detach())
                sequences += batch["x"].shape[0]
            # One look at the losses per group (the whole call, unless its batches are large), not
            # per step: on a GPU each look waits for the device. It comes before the call returns,
            # so no checkpoint can hold what a bad step did.
            group_losses = torch.stack(group_losses)
            if not bool(torch.isfinite(group_losses).all()):
                bad = int((~torch.isfinite(group_losses)).nonzero()[0])
                step = trainer.global_step - len(group_losses) + bad
                batch = {k: v.to(self.device) for k, v in group[bad].items()}
                raise FloatingPointError(self._non_finite_report(batch, None, group_losses[bad], step))
            losses.append(group_losses)
        count_batches(trainer, sum(len(group) for group in losses))
        if not losses:
            return
        losses = torch.cat(losses)
        # self.log costs about as much as an optimizer step of a small model, so the loss (the mean
        # over this call's steps) is logged only on the calls whose metrics Lightning writes out.
        if trainer._logger_connector.should_update_logs or trainer.fast_dev_run:
            self.log("train/loss", losses.mean(), batch_size=sequences)

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
            f"model.gradient_clip_val, clean data, or trainer.detect_anomaly=true to find the operation."
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
        if self.hparams.decoder != "repeat":  # metrics on what the decoder generates by itself
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
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(steps)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def steps_until_lightning_acts(trainer: L.Trainer) -> int | float:
    """Optimizer steps until Lightning next acts on a step or batch count: writing the logs
    (``log_every_n_steps``, and a step-interval ``LearningRateMonitor`` just before them),
    validating (an int or fractional ``val_check_interval``), saving a checkpoint
    (``ModelCheckpoint(every_n_train_steps=...)``) or stopping (``max_steps``).

    Lightning looks at these counts only between ``training_step`` calls, so a fast-path call ends
    there: each then happens at the same step as with one step per call.
    """
    loop = trainer.fit_loop.epoch_loop
    counts = []  # (what the count is now, Lightning acts at its multiples)
    if trainer.log_every_n_steps > 0:
        counts.append((loop._batches_that_stepped, trainer.log_every_n_steps))
        if any(
            isinstance(c, LearningRateMonitor) and c.logging_interval == "step" for c in trainer.callbacks
        ):
            # it logs in on_train_batch_start, before a logging step: that step gets a call of its own
            counts.append((loop._batches_that_stepped + 1, trainer.log_every_n_steps))
    # a time-based val_check_interval (Lightning 2.6 on) is looked at after every call anyway
    timed = getattr(trainer, "_val_check_time_interval", None) is not None
    val_every = trainer.val_check_batch
    if not timed and val_every is not None and math.isfinite(val_every):
        # batches of this epoch, or of the whole fit with check_val_every_n_epoch=None; Lightning
        # has already counted this call, which has fetched nothing yet
        progress = loop.batch_progress
        ready = progress.total.ready if trainer.check_val_every_n_epoch is None else progress.current.ready
        counts.append((ready - 1, int(val_every)))
    for callback in trainer.checkpoint_callbacks:
        if (every := getattr(callback, "_every_n_train_steps", 0)) >= 1:
            counts.append((trainer.global_step, every))
    steps = min((every - now % every for now, every in counts), default=math.inf)
    if trainer.max_steps >= 0:
        steps = min(steps, trainer.max_steps - trainer.global_step)
    return steps


def count_batches(trainer: L.Trainer, batches: int) -> None:
    """Lightning counts one batch and one logging step per ``training_step`` call; a fast-path call
    that took ``batches`` adds the rest. TensorBoard's step axis, ``log_every_n_steps`` and
    ``val_check_interval`` then count optimizer steps and batches, whatever ``steps_per_call`` is."""
    loop, extra = trainer.fit_loop.epoch_loop, batches - 1
    loop._batches_that_stepped += extra
    for counter in (loop.batch_progress.current, loop.batch_progress.total):
        counter.ready += extra
        counter.started += extra
        counter.processed += extra
        counter.completed += extra


# The most a fast-path call fetches ahead at once, in one group of batches; the previous group is
# still referenced while the next is fetched (see SequenceAutoencoder._training_steps).
FETCH_AHEAD_BYTES = 64 * 2**20


def fetch_groups(batches: Iterator[dict[str, Tensor]], limit_bytes: int) -> Iterator[list[dict[str, Tensor]]]:
    """``batches`` in lists fetched back to back, each of at most ``limit_bytes`` (judged by the first
    batch, and at least one batch)."""
    first = next(batches, None)
    if first is None:
        return
    size = max(1, limit_bytes // max(1, sum(v.nbytes for v in first.values())))
    group = [first, *itertools.islice(batches, size - 1)]
    while group:
        yield group
        group = list(itertools.islice(batches, size))


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

"""The fast path: ``model.steps_per_call`` optimizer steps per Lightning ``training_step`` call.

Lightning's per-step machinery (hooks, closures, logging) costs about 30% of a small model's step
(scripts/benchmark.py), so with ``steps_per_call=k`` each call takes up to k batches from the
loader and makes the optimizer steps itself (manual optimization), as a hand-written loop does.
A call ends wherever Lightning would act on a step or batch count, and the batches it took are
added to Lightning's counters, so logging, validation, checkpoints and ``max_steps`` happen at the
same steps as with one step per call (tests/training/test_module.py checks that they do).

The private Lightning APIs this touches are named in ``PRIVATE_LIGHTNING_APIS``;
tests/training/test_fast_path.py fails if a Lightning upgrade moves one of them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import Tensor

from seqae.errors import TrainingDivergedError

if TYPE_CHECKING:
    from seqae.training.module import SequenceAutoencoder

# (object, attribute): what the fast path reads or calls that Lightning does not document.
PRIVATE_LIGHTNING_APIS = (
    ("LightningOptimizer", "_on_before_step"),  # Lightning's step counter: trainer.global_step, max_steps
    ("LightningOptimizer", "_on_after_step"),
    ("_ManualOptimization", "_on_before_step"),  # what manual optimization installs there
    ("_ManualOptimization", "_on_after_step"),
    ("trainer.fit_loop.epoch_loop", "_batches_that_stepped"),  # the logging steps' counter
    ("trainer.fit_loop.epoch_loop.batch_progress", "current"),  # the batches' counters
    ("trainer", "_logger_connector"),  # .should_update_logs: whether this call's metrics are written
    ("ModelCheckpoint", "_every_n_train_steps"),
)

# The most a fast-path call fetches ahead at once, in one group of batches; the previous group is
# still referenced while the next is fetched (see training_steps).
FETCH_AHEAD_BYTES = 64 * 2**20


def training_steps(module: SequenceAutoencoder, dataloader_iter: Any) -> None:
    """Up to ``steps_per_call`` optimizer steps, each on the next batch: what a hand-written loop does."""
    optimizer, trainer = module.optimizers(), module.trainer
    clip = module.hparams.gradient_clip_val
    # One device, in 32-bit or mixed precision: Lightning's backward/clip/step wrappers then add
    # only the per-step callback hooks (on_before/after_backward, on_before_optimizer_step), about
    # 10% of a small model's step. The fast path skips them and does what the precision plugin
    # does: autocast is already on (Lightning calls training_step inside it), and for 16-mixed its
    # GradScaler scales the loss and unscales the gradients before clipping. DDP and other
    # precision plugins (64-true, FSDP, ...) keep Lightning's wrappers.
    plugin = trainer.precision_plugin
    lean = type(plugin) in (Precision, MixedPrecision) and type(trainer.strategy) is SingleDeviceStrategy
    scaler = getattr(plugin, "scaler", None)
    # What the optimizer steps is what is clipped; module.parameters() would walk every submodule
    # (the torchmetrics ones too) on each step, 30 us of a small model's 4 ms step.
    params = [p for group in optimizer.param_groups for p in group["params"]]
    scheduler = module.lr_schedulers()
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler = None  # stepped after each validation
    steps = min(module.hparams.steps_per_call, steps_until_lightning_acts(trainer))
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
                batch = {k: v.to(module.device, non_blocking=True) for k, v in batch.items()}
            else:
                batch = trainer.strategy.batch_to_device(trainer.precision_plugin.convert_input(batch))
            loss, _ = module.training_loss(batch)
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
                module.manual_backward(loss)
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
            batch = {k: v.to(module.device) for k, v in group[bad].items()}
            raise TrainingDivergedError(module._non_finite_report(batch, None, group_losses[bad], step))
        losses.append(group_losses)
    count_batches(trainer, sum(len(group) for group in losses))
    if not losses:
        return
    losses = torch.cat(losses)
    # module.log costs about as much as an optimizer step of a small model, so the loss (the mean
    # over this call's steps) is logged only on the calls whose metrics Lightning writes out.
    if trainer._logger_connector.should_update_logs or trainer.fast_dev_run:
        module.log("train/loss", losses.mean(), batch_size=sequences)


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

"""The training budget, counted in optimizer steps: what a run will do, said before it starts.

A budget in epochs gives a 40-series archive set 2 steps an epoch and 2M rows 62,500, so seqae
counts training (``trainer.max_steps``), validation (``trainer.val_check_interval`` steps, with
``trainer.check_val_every_n_epoch=null``) and early-stopping patience (validations) in steps. The
training loader strings passes over the data together up to the budget (see
``SequenceDataModule.train_dataloader``), so a small set is not thousands of Lightning epochs.
"""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from seqae.errors import ConfigError


class BudgetError(ConfigError):
    """A budget that would train forever, or end before anything is validated."""


def describe_budget(trainer: L.Trainer, train_sequences: int, batch_size: int) -> tuple[str, str | None]:
    """One line saying what the run will do (steps, epochs, validations, patience), and a warning
    or None. Raises ``BudgetError`` for a budget without an end, or one that ends before the
    first validation while a callback waits on ``val/loss``."""
    if trainer.fast_dev_run or trainer.overfit_batches:
        return "Training budget: set by the debug mode (fast_dev_run / overfit_batches).", None
    batches = batches_per_pass(trainer, train_sequences, batch_size)
    max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
    by_epochs = max_epochs * batches if max_epochs is not None and max_epochs >= 0 else math.inf
    steps = min(max_steps if max_steps >= 0 else math.inf, by_epochs)
    if not math.isfinite(steps):
        raise BudgetError(
            f"trainer.max_steps={max_steps} and trainer.max_epochs={max_epochs} set no end to training; "
            f"expected a budget in optimizer steps, e.g. trainer.max_steps=3000."
        )
    every = _validation_every(trainer, batches)
    validations = int(steps // every) if every else 0
    waiting = [
        type(c).__name__
        for c in trainer.callbacks
        if isinstance(c, EarlyStopping | ModelCheckpoint) and getattr(c, "monitor", None)
    ]
    if validations == 0 and waiting and trainer.limit_val_batches != 0:
        raise BudgetError(
            f"Training stops after {steps:,} optimizer steps, before the first validation "
            f"(every {every:,} steps: trainer.val_check_interval={trainer.val_check_interval}), so "
            f"{' and '.join(sorted(set(waiting)))} would never see val/loss. Lower "
            f"trainer.val_check_interval to at most {steps}, or raise trainer.max_steps."
        )
    passes = steps / batches
    parts = [
        f"Training budget: {steps:,} optimizer steps = {passes:,.{0 if passes >= 10 else 2}f} passes over the "
        f"{train_sequences:,} training sequences ({batches:,} batches of {batch_size} each)"
    ]
    if validations:
        limit = trainer.limit_val_batches
        size = f", at most {limit} batches each" if isinstance(limit, int) else ""
        times = "once" if validations == 1 else f"{validations} times"
        parts.append(f"validating every {every:,} steps ({times}{size})")
    stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    if stopper is not None and validations:
        parts.append(
            f"stopping early after {stopper.patience} validations ({stopper.patience * every:,} steps) "
            f"without a better {stopper.monitor}"
        )
    warning = None
    if steps < batches:
        warning = (
            f"The budget of {steps:,} steps covers {steps / batches:.1%} of one pass over the "
            f"{train_sequences:,} training sequences; raise trainer.max_steps to train on all of them."
        )
    return "; ".join(parts) + ".", warning


def batches_per_pass(trainer: L.Trainer, train_sequences: int, batch_size: int) -> int:
    """Optimizer steps in one pass over the training data (``batch_size`` is the global batch).
    A run's ``epochs`` in ``metrics.json`` are its steps over this: passes over the data, not
    Lightning's epochs, of which a step budget makes one."""
    return _limited(math.ceil(train_sequences / batch_size), trainer.limit_train_batches)


def _limited(batches: int, limit: int | float) -> int:
    """Batches of an epoch under Lightning's ``limit_train_batches`` (an int, or a fraction)."""
    if isinstance(limit, int):
        return max(1, min(batches, limit))
    return max(1, int(batches * limit))


def _validation_every(trainer: L.Trainer, batches: int) -> int:
    """Optimizer steps between validations (0: never)."""
    interval = trainer.val_check_interval
    if trainer.limit_val_batches == 0:
        return 0
    if trainer.check_val_every_n_epoch is None:  # an int interval, counted across epoch ends
        return int(interval)
    per_epoch = int(interval) if isinstance(interval, int) else max(1, int(batches * interval))
    return per_epoch if per_epoch < batches else batches * trainer.check_val_every_n_epoch

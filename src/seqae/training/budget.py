"""The training budget, counted in optimizer steps: what a run will do, said before it starts.

A budget in epochs gives a 40-series archive set 2 steps an epoch and 2M rows 62,500, so seqae
counts training (``trainer.max_steps``), validation (``trainer.val_check_interval`` steps, with
``trainer.check_val_every_n_epoch=null``) and early-stopping patience (validations) in steps. The
training loader strings passes over the data together up to the budget (see
``SequenceDataModule.train_dataloader``), so a small set is not thousands of Lightning epochs; a
budget in epochs (``trainer.max_epochs``) keeps one pass per epoch. A budget shorter than the
validation interval validates once, at its end.
"""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, Timer

from seqae.errors import ConfigError


class BudgetError(ConfigError):
    """A budget that would train forever."""


def plan_budget(trainer: L.Trainer, train_sequences: int, batch_size: int) -> tuple[str, str | None]:
    """One line saying what the run will do (steps, epochs, validations, patience), and a warning
    or None. A budget shorter than ``trainer.val_check_interval`` validates once, at its end (the
    Trainer's interval is set to the budget), so every run has a best checkpoint and a test. Raises
    ``BudgetError`` for a budget without an end."""
    if trainer.fast_dev_run or trainer.overfit_batches:
        return "Training budget: set by the debug mode (fast_dev_run / overfit_batches).", None
    batches = batches_per_pass(trainer, train_sequences, batch_size)
    max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
    by_epochs = max_epochs * batches if max_epochs is not None and max_epochs >= 0 else math.inf
    steps = min(max_steps if max_steps >= 0 else math.inf, by_epochs)
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    time_limit = (
        f" or trainer.max_time ({timer.time_remaining():,.0f} s), whichever comes first" if timer else ""
    )
    if not math.isfinite(steps) and timer is None:
        raise BudgetError(
            f"trainer.max_steps={max_steps} and trainer.max_epochs={max_epochs} set no end to training; "
            f"expected a budget in optimizer steps (e.g. trainer.max_steps=3000), epochs or trainer.max_time."
        )
    every = _validation_every(trainer, batches)
    validations = int(steps // every) if every and math.isfinite(steps) else 0
    at_end = validations == 0 and every and math.isfinite(steps) and trainer.check_val_every_n_epoch is None
    if at_end:  # a short budget (a quick look, a tiny sweep): its only validation comes at its end
        trainer.val_check_interval = every = int(steps)
        validations = 1
    if not math.isfinite(steps):
        parts = [f"Training budget: trainer.max_time ({timer.time_remaining():,.0f} s)"]
    else:
        passes = steps / batches
        parts = [
            f"Training budget: {steps:,} optimizer step{'s' if steps != 1 else ''} = {passes:,.{0 if passes >= 10 else 2}f} passes over "
            f"the {train_sequences:,} training sequences ({batches:,} batches of {batch_size} each){time_limit}"
        ]
    if at_end:
        parts.append("validating once, at its end")
    elif every and not validations:
        parts.append(f"validating every {every:,} steps")
    elif validations:
        limit = trainer.limit_val_batches
        size = f", at most {limit} batches each" if isinstance(limit, int) else ""
        times = "once" if validations == 1 else f"{validations} times"
        parts.append(f"validating every {every:,} steps ({times}{size})")
    stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    if stopper is not None and validations and not at_end:
        parts.append(
            f"stopping early after {stopper.patience} validations ({stopper.patience * every:,} steps) "
            f"without a better {stopper.monitor}"
        )
    warning = None
    if math.isfinite(steps) and steps < batches:
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

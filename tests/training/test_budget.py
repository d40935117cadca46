"""The training budget in steps: said before a run starts; a short one validates at its end; one without an end is refused."""

from __future__ import annotations

import pytest
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from seqae.training.budget import BudgetError, plan_budget
from tests.conftest import quiet_trainer


def trainer(**kwargs):
    callbacks = [ModelCheckpoint(monitor="val/loss"), EarlyStopping(monitor="val/loss", patience=5)]
    args = {"max_steps": 3000, "max_epochs": -1, "val_check_interval": 150, "check_val_every_n_epoch": None}
    return quiet_trainer(None, callbacks=callbacks, **(args | kwargs))


def test_a_small_set_gets_the_whole_step_budget_in_many_passes():
    line, warning = plan_budget(trainer(limit_val_batches=50), train_sequences=40, batch_size=32)
    assert line == (
        "Training budget: 3,000 optimizer steps = 1,500 passes over the 40 training sequences (2 batches of "
        "32 each); validating every 150 steps (20 times, at most 50 batches each); stopping early after 5 "
        "validations (750 steps) without a better val/loss."
    )
    assert warning is None


def test_data_larger_than_the_budget_is_said_not_cut_silently():
    line, warning = plan_budget(trainer(), train_sequences=2_000_000, batch_size=32)
    assert "3,000 optimizer steps = 0.05 passes over the 2,000,000 training sequences" in line
    assert warning == (
        "The budget of 3,000 steps covers 4.8% of one pass over the 2,000,000 training sequences; raise "
        "trainer.max_steps to train on all of them."
    )


def test_an_epoch_budget_still_counts_in_steps():
    t = trainer(max_steps=-1, max_epochs=4, val_check_interval=1.0, check_val_every_n_epoch=1)
    line, _ = plan_budget(t, train_sequences=100, batch_size=10)
    assert line.startswith("Training budget: 40 optimizer steps = 4.00 passes")
    assert "validating every 10 steps (4 times)" in line
    line, _ = plan_budget(trainer(max_steps=200), train_sequences=100, batch_size=10)
    assert "validating every 150 steps (once)" in line


def test_a_budget_without_an_end_is_refused_and_max_time_is_an_end():
    with pytest.raises(BudgetError, match=r"trainer.max_steps=-1 and trainer.max_epochs=-1 set no end"):
        plan_budget(trainer(max_steps=-1), train_sequences=100, batch_size=10)
    line, _ = plan_budget(trainer(max_steps=-1, max_time="00:00:01:00"), train_sequences=100, batch_size=10)
    assert line.startswith("Training budget: trainer.max_time (60 s); validating every 150 steps")
    line, _ = plan_budget(trainer(max_time="00:00:01:00"), train_sequences=100, batch_size=10)
    assert (
        "3,000 optimizer steps = 300 passes over the 100 training sequences (10 batches of 10 each) or "
        in line
    )
    assert "trainer.max_time (60 s), whichever comes first" in line


def test_a_budget_shorter_than_the_validation_interval_validates_at_its_end():
    t = trainer(max_steps=100)
    line, _ = plan_budget(t, train_sequences=100, batch_size=10)
    assert t.val_check_interval == 100
    assert line == (
        "Training budget: 100 optimizer steps = 10 passes over the 100 training sequences (10 batches of 10 "
        "each); validating once, at its end."
    )
    t = trainer(max_epochs=2)  # 2 epochs of 10 batches, within the 3,000 steps
    plan_budget(t, train_sequences=100, batch_size=10)
    assert t.val_check_interval == 20

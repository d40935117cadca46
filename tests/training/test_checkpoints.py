"""Checkpoints: safe to read, atomic to write, clear when they do not fit."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from seqae.training.checkpoints import (
    AtomicCheckpointIO,
    CheckpointError,
    check_matches,
    read_checkpoint,
    restore_rng_states,
    rng_states,
)
from seqae.training.module import SequenceAutoencoder
from tests.conftest import recurrent


def saved(tmp_path, **hparams) -> tuple:
    model = SequenceAutoencoder(input_size=3, **recurrent(8), **hparams)
    path = tmp_path / "model.ckpt"
    AtomicCheckpointIO().save_checkpoint(
        {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path
    )
    return model, path


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    _, path = saved(tmp_path)
    before = path.read_bytes()

    def killed_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # what a kill would leave behind mid-write
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, path)
    assert path.read_bytes() == before
    read_checkpoint(path)  # still loads


def test_missing_truncated_and_foreign_checkpoints_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"nowhere\.ckpt does not exist"):
        read_checkpoint(tmp_path / "nowhere.ckpt")

    _, path = saved(tmp_path)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"truncated\.ckpt cannot be read.*truncated, corrupt"):
        read_checkpoint(truncated)

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"model": torch.nn.Linear(2, 2).state_dict()}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign\.ckpt was not written by seqae"):
        read_checkpoint(foreign)

    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "code": random.Random()}, pickled)
    with pytest.raises(CheckpointError, match="arbitrary Python objects"):
        read_checkpoint(pickled)  # weights_only: loading never runs code


def test_a_checkpoint_of_another_shape_names_the_tensors(tmp_path):
    _, path = saved(tmp_path)
    other = SequenceAutoencoder(input_size=3, **recurrent(16))
    with pytest.raises(
        CheckpointError, match=r"encoder\.lstm\.weight_ih_l0: checkpoint \(32, 3\) vs config \(64, 3\)"
    ):
        check_matches(path, read_checkpoint(path), other)
    deeper = SequenceAutoencoder(input_size=3, **recurrent(8, num_layers=2))
    with pytest.raises(CheckpointError, match=r"weight_ih_l1: missing from the checkpoint"):
        check_matches(path, read_checkpoint(path), deeper)


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    path = tmp_path / "rng.pt"
    torch.save(rng_states(), path)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    restore_rng_states(torch.load(path, weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1]) and expected[2] == again[2]

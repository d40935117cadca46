"""The training task in-process, on composed configs."""

from __future__ import annotations

import json

import pytest
import torch

from seqae.model import SequenceAutoencoder
from seqae.train import train


def test_fast_dev_run_through_the_task(tiny_cfg):
    metrics = train(tiny_cfg("debug=fdr"))
    assert {"test/loss", "test/mse", "test/mae"} <= set(metrics)


def test_task_writes_metrics_checkpoints_and_the_best_checkpoint_reproduces_test_loss(tiny_cfg, tmp_path):
    cfg = tiny_cfg("encoder=stacked", "readout=cell")
    metrics = train(cfg)
    run = tmp_path / "run"
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk == pytest.approx(metrics) or on_disk == metrics
    assert on_disk["encoder"] == "stacked" and on_disk["readout"] == "cell"
    assert {"val/loss_best", "test/loss", "test/mse", "test/mae"} <= set(on_disk)
    assert (run / "checkpoints" / "best.ckpt").exists() and (run / "checkpoints" / "last.ckpt").exists()
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == cfg.trainer.max_epochs - 1  # refreshed every epoch, not only on improvement

    import lightning as L
    from hydra.utils import instantiate

    model = SequenceAutoencoder.load_from_checkpoint(run / "checkpoints" / "best.ckpt")
    dm = instantiate(cfg.data)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    again = trainer.test(model, datamodule=dm, verbose=False)[0]["test/loss"]
    assert again == pytest.approx(metrics["test/loss"], rel=1e-5)


def test_a_fresh_run_never_overwrites_an_earlier_one(tiny_cfg, tmp_path):
    train(tiny_cfg("debug=limit", "trainer.max_epochs=1"))
    before = (tmp_path / "run" / "metrics.json").read_bytes()
    with pytest.raises(FileExistsError, match="already holds an earlier run"):
        train(tiny_cfg("debug=limit", "trainer.max_epochs=1"))
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before

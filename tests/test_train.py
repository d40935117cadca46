"""The training task in-process, on composed configs."""

from __future__ import annotations

import json
import math
import os

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from seqae.train import hparams_summary, train
from seqae.training.module import SequenceAutoencoder
from tests.conftest import compose_config


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
    # epochs are passes over the training data, not Lightning's (a step budget makes one of those)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    batches = math.ceil(len(dm.splits["train"]) / cfg.data.batch_size)
    assert on_disk["steps"] == cfg.trainer.max_steps and batches < cfg.trainer.max_steps
    assert on_disk["epochs"] == pytest.approx(cfg.trainer.max_steps / batches, abs=0.01)
    assert (run / "checkpoints" / "best.ckpt").exists() and (run / "checkpoints" / "last.ckpt").exists()
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (
        last["global_step"] == cfg.trainer.max_steps
    )  # refreshed at every validation, not only on improvement

    model = SequenceAutoencoder.load(run / "checkpoints" / "best.ckpt")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    again = trainer.test(model, datamodule=dm, verbose=False)[0]["test/loss"]
    assert again == pytest.approx(metrics["test/loss"], rel=1e-5)


def test_a_fresh_run_never_overwrites_an_earlier_one(tiny_cfg, tmp_path):
    train(tiny_cfg("debug=limit"))
    before = (tmp_path / "run" / "metrics.json").read_bytes()
    with pytest.raises(FileExistsError, match="already holds an earlier run"):
        train(tiny_cfg("debug=limit"))
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before


class PoisonWeightsAt(L.Callback):
    """Turns one encoder weight into NaN at a given step, as a diverging run would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.encoder.lstm.weight_ih_l0[0, 0] = float("nan")


def test_a_non_finite_loss_stops_the_run_naming_step_epoch_and_culprit(tiny_cfg, tmp_path):
    # TINY validates (and writes last.ckpt) every 4 steps: step 4 comes right after the first one
    cfg = tiny_cfg(
        "encoder=single",
        "+callbacks.poison._target_=tests.test_train.PoisonWeightsAt",
        "+callbacks.poison.step=4",
    )
    with pytest.raises(FloatingPointError) as error:
        train(cfg)
    message = str(error.value)
    assert "global step 4" in message
    assert "encoder.lstm.weight_ih_l0" in message and "trainer.detect_anomaly=true" in message
    run = tmp_path / "run"
    assert not (run / "metrics.json").exists()
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4 and all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_the_hparams_summary_holds_what_runs_are_compared_by(tmp_path):
    overrides = ["data=ucr", "data.root=/somewhere/archives", "data.name=GunPoint", "encoder=stacked"]
    cfg = compose_config(overrides, tmp_path / "run")
    summary = hparams_summary(cfg)
    assert set(summary) == {"choices", "model", "encoder", "decoder", "objective", "data", "seed", "trainer"}
    assert summary["choices"]["encoder"] == "stacked" and summary["encoder"]["num_layers"] == 2
    assert summary["decoder"]["num_layers"] == 2 and summary["objective"]["noise"] == 0.1
    assert summary["data"]["name"] == "GunPoint" and "root" not in summary["data"]  # where, not what
    assert set(summary["trainer"]) == {
        "accelerator",
        "devices",
        "num_nodes",
        "precision",
        "max_steps",
        "max_epochs",
        "val_check_interval",
    }
    assert not any(k.startswith("_") for section in ("model", "encoder", "data") for k in summary[section])


def test_a_ddp_run_leaves_no_process_group_behind(tiny_cfg):
    """Gloo's threads can abort a process that exits with its group alive, after a run that
    succeeded; every rank's run destroys the group at its end."""
    environment = dict(os.environ)
    try:
        metrics = train(tiny_cfg("debug=limit", "trainer.strategy=ddp", "trainer.devices=1"))
    finally:  # Lightning's launcher exports LOCAL_RANK, WORLD_SIZE, ...; the CLI tests must not inherit them
        os.environ.clear()
        os.environ.update(environment)
    assert metrics["steps"] > 0
    assert not torch.distributed.is_initialized()


def test_threads_holds_under_ddp(tiny_cfg):
    """`threads=N` is what each rank uses: Lightning's DDP launcher would otherwise give a rank all
    the cores it thinks it has (two torchrun "nodes" on one host: twice the cores, 50x slower)."""
    threads = (os.cpu_count() or 1) + 1  # never what Lightning would choose (cores / processes)
    environment = dict(os.environ)
    os.environ.pop("OMP_NUM_THREADS", None)
    try:
        train(tiny_cfg("debug=limit", "trainer.strategy=ddp", "trainer.devices=1", f"threads={threads}"))
        assert torch.get_num_threads() == threads
    finally:
        os.environ.clear()
        os.environ.update(environment)
        torch.set_num_threads(1)

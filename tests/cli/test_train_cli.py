"""`python train.py ...` in a fresh process, exactly as a user types it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import TINY, run_cli


def read_events(run_dir: Path) -> event_accumulator.EventAccumulator:
    (event_file,) = sorted((run_dir / "tensorboard").rglob("events.out.tfevents.*"))[:1]
    acc = event_accumulator.EventAccumulator(str(event_file), size_guidance={"scalars": 0, "images": 0})
    return acc.Reload()


def assert_a_clean_console(output: str, log: str) -> None:
    """Every message once on the console and once in train.log; no advertisements, no deprecation
    noise from inside the libraries, no traceback. Progress bars are not messages."""
    lines = [line.strip() for line in re.split(r"[\r\n]", output)]
    bars = re.compile(r"(it/s|s/it|\?it/s)\]|^\x1b|^(Epoch|Validation|Testing|Sanity Checking)\b")
    messages = [line.split("] - ", 1)[-1] for line in lines if line and not bars.search(line)]
    repeated = {m for m in messages if messages.count(m) > 1}
    assert not repeated, f"printed more than once: {repeated}"
    for noise in ("INFO: ", "Tip:", "litlogger", "LeafSpec", "Traceback", "Warning"):
        assert noise not in output, f"{noise!r} on the console"
    logged = [line.split("] - ", 1)[-1] for line in log.splitlines() if "] - " in line]
    assert len(logged) == len(set(logged)), "a message written twice to train.log"


def hparams_columns(acc: event_accumulator.EventAccumulator) -> set[str]:
    """The HPARAMS tab's hyper-parameter columns, as TensorBoard's hparams plugin reads them."""
    content = acc.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    return set(data.session_start_info.hparams)


def hparams_metric_tags(acc: event_accumulator.EventAccumulator) -> set[str]:
    content = acc.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    return {m.name.tag for m in data.experiment.metric_infos}


def hparams_shown_first(acc: event_accumulator.EventAccumulator) -> set[str]:
    """The columns the HPARAMS tab lists first and shows by default: those marked as differing."""
    content = acc.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    return {h.name for h in data.experiment.hparam_infos if h.differs}


@pytest.mark.slow
def test_a_run_writes_metrics_checkpoints_and_tensorboard_events(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        *TINY, "encoder=stacked", "readout=cell", "trainer.log_every_n_steps=1", f"hydra.run.dir={run_dir}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    budget = (
        "Training budget: 8 optimizer steps = 2.00 passes over the 52 training sequences (4 batches of 16 "
        "each); validating every 4 steps (2 times, at most 50 batches each); stopping early after 10 "
        "validations (40 steps) without a better val/loss."
    )
    assert budget in proc.stdout and budget in (run_dir / "train.log").read_text()
    assert_a_clean_console(proc.stdout + proc.stderr, (run_dir / "train.log").read_text())
    summary = proc.stdout[proc.stdout.index(f"Run folder: {run_dir}") :]
    assert re.search(r"\n  test/mse +\d\.\d{4}\n", summary)
    assert summary.rstrip().endswith(f"See it in TensorBoard: tensorboard --logdir {run_dir}")

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"val/loss_best", "test/loss", "test/mse", "test/mae"} <= set(metrics)
    assert metrics["encoder"] == "stacked" and metrics["readout"] == "cell"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()

    acc = read_events(run_dir)
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/mse", "test/mse"} <= scalars
    assert [e.step for e in acc.Scalars("val/loss")] and len(acc.Scalars("val/loss")) == 2
    assert {"hp/val_loss_best", "test/mse"} <= hparams_metric_tags(acc)
    columns = hparams_columns(acc)
    assert {"choices/encoder", "choices/readout", "encoder/hidden_size", "data/batch_size", "seed"} <= columns
    assert {"trainer/precision", "trainer/devices", "trainer/max_steps"} <= columns
    unwanted = [
        c for c in columns if re.search(r"_target_|^callbacks|^paths|^hydra|/root$|/path$|/dirpath", c)
    ]
    assert not unwanted, unwanted
    # what the command line set, not the alphabetical first five (choices/callbacks, choices/data, ...)
    assert hparams_shown_first(acc) == {
        "choices/encoder",
        "choices/readout",
        "encoder/hidden_size",
        *(f"data/{key}" for key in ("num_sequences", "seq_len", "num_features", "batch_size")),
        *(f"trainer/{key}" for key in ("max_steps", "val_check_interval", "accelerator")),
    }
    assert "val/reconstruction" in acc.Tags()["images"]


@pytest.mark.slow
def test_a_multirun_gives_one_folder_per_job_each_with_its_metrics(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        *TINY,
        "trainer.max_epochs=1",
        "callbacks=none",
        "encoder=single,stacked",
        "readout=hidden,cell",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = {
        (m["encoder"], m["readout"]) for m in (json.loads((j / "metrics.json").read_text()) for j in jobs)
    }
    assert seen == {("single", "hidden"), ("single", "cell"), ("stacked", "hidden"), ("stacked", "cell")}


def test_a_misspelled_key_fails_naming_it(tmp_path):
    proc = run_cli("trainer.max_epoch=3", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert "max_epoch" in proc.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_an_unknown_group_option_fails_naming_it_and_the_choices(tmp_path):
    proc = run_cli("encoder=stackd", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert "stackd" in proc.stderr and "stacked" in proc.stderr  # Hydra lists the available options


@pytest.mark.slow
@pytest.mark.parametrize(
    ("budget", "steps"),
    [
        (["-m", "trainer.max_steps=1,3"], {"0": 1, "1": 3}),  # a sweep over tiny budgets
        (["trainer.max_epochs=2", "trainer.max_steps=-1"], {"": 8}),  # 2 passes of 4 batches
        (["trainer.max_epochs=2"], {"": 8}),  # epochs bound a run that also has max_steps
        (["+trainer.max_time=00:00:00:03", "trainer.max_steps=-1"], {"": None}),
    ],
)
def test_any_budget_trains_validates_checkpoints_and_tests(tmp_path, budget, steps):
    # Validation every 100 steps: none of these budgets reaches it, so each validates at its end.
    multirun = [a for a in budget if a == "-m"]  # Hydra's flag goes before the overrides
    proc = run_cli(
        *multirun,
        *TINY,
        "trainer.val_check_interval=100",
        *[a for a in budget if a != "-m"],
        f"hydra.run.dir={tmp_path}",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, expected in steps.items():
        run = tmp_path / job
        metrics = json.loads((run / "metrics.json").read_text())
        if expected is not None:
            assert metrics["steps"] == expected
        assert metrics["steps"] >= 1 and "val/loss_best" in metrics and "test/mse" in metrics
        assert (run / "checkpoints" / "best.ckpt").is_file()
        assert "Training budget: " in (run / "train.log").read_text()


def test_a_run_without_validation_trains_tests_and_keeps_its_final_weights(tmp_path):
    run = tmp_path / "run"
    proc = run_cli(*TINY, "data.val_fraction=0", "evaluate_after_train=true", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "No validation split (data.val_fraction=0)" in proc.stdout + proc.stderr
    assert_a_clean_console(proc.stdout + proc.stderr, (run / "train.log").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert "test/loss" in metrics and "eval/probe_accuracy" in metrics and "val/loss_best" not in metrics
    assert not (run / "checkpoints" / "best.ckpt").exists()
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 8  # TINY's budget: the weights it tested

    import seqae

    codes = seqae.load(run).encode(np.random.default_rng(0).normal(size=(2, 12, 3)))
    assert codes.shape[0] == 2 and np.isfinite(codes).all()

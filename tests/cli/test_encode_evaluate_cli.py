"""train.py -> encode.py -> evaluate.py -> summarize at the end of a sweep, each in a fresh process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import TINY, run_cli

MODEL = [
    "encoder.hidden_size=8",
    "trainer.max_steps=12",
    "trainer.val_check_interval=4",
    "trainer.accelerator=cpu",
    "++callbacks.progress_bar.refresh_rate=0",
]


def write_ucr(root: Path, name: str = "Toy", n: int = 40, length: int = 24) -> None:
    """A UCR 2018-format data set with two clearly separable classes, rising ("up") and falling
    ("down") ramps with random offsets and noise; some sequences end early (NaN padding), as in the archive."""
    rng = np.random.default_rng(0)
    (root / name).mkdir(parents=True)
    for split in ("TRAIN", "TEST"):
        lines = []
        for i in range(n):
            label = ("up", "down")[i % 2]
            ramp = np.linspace(-1, 1, length) * (1 if label == "up" else -1)
            x = ramp + rng.uniform(-1, 1) + 0.1 * rng.normal(size=length)
            x[length - rng.integers(0, 4) :] = np.nan  # 0-3 steps of padding
            lines.append("\t".join([label, *(f"{v:.5f}" for v in x)]))
        (root / name / f"{name}_{split}.tsv").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_train_encode_evaluate_on_a_labelled_ucr_data_set(tmp_path):
    write_ucr(tmp_path / "ucr")
    run = tmp_path / "run"
    data = ["data=ucr", f"data.root={tmp_path / 'ucr'}", "data.name=Toy", "data.batch_size=8"]
    proc = run_cli(
        *data, *MODEL, "evaluate_after_train=true", "eval.anomaly_label=down", f"hydra.run.dir={run}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    in_training = json.loads((run / "eval.json").read_text())
    assert in_training["eval/probe_accuracy"] > 0.9  # two classes: chance is 0.5
    assert (
        json.loads((run / "metrics.json").read_text())["eval/probe_accuracy"]
        == in_training["eval/probe_accuracy"]
    )

    # split=train is the whole official TRAIN file (train + val), in file order, with its labels
    ckpt = run / "checkpoints" / "best.ckpt"
    proc = run_cli(
        f"ckpt={ckpt}", "split=train", f"out={tmp_path / 'codes' / 'train.npy'}", script="scripts/encode.py"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    codes, labels = (
        np.load(tmp_path / "codes" / "train.npy"),
        np.load(tmp_path / "codes" / "train_labels.npy"),
    )
    # the default encoder's code is encoder.code_size (320) wide; instance_norm adds each series' mean and log std
    assert codes.shape == (40, 320 + 2) and codes.dtype == np.float32 and np.isfinite(codes).all()
    names = [
        line.split("\t")[0] for line in (tmp_path / "ucr" / "Toy" / "Toy_TRAIN.tsv").read_text().splitlines()
    ]
    assert len(set(zip(names, labels.tolist(), strict=True))) == 2  # one id per name, row for row

    # evaluate.py reads the run's data config and seed from <run>/.hydra: the same numbers again
    proc = run_cli(
        f"ckpt={ckpt}",
        "eval.anomaly_label=down",
        f"out={tmp_path / 'eval.json'}",
        script="scripts/evaluate.py",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "eval.json").read_text())
    for key in ("eval/mse", "eval/mae", "eval/probe_accuracy", "eval/knn_accuracy", "eval/auroc"):
        assert again[key] == pytest.approx(in_training[key], rel=1e-6), key
    printed, _ = json.JSONDecoder().raw_decode(proc.stdout, proc.stdout.index("{"))
    assert printed["eval/auroc"] == again["eval/auroc"]

    # TensorBoard: the projector (labelled by the archive's own class names), the error histogram,
    # and the eval metrics as HPARAMS columns
    logdir = run / "tensorboard"
    assert (logdir / "projector_config.pbtxt").is_file()
    (metadata,) = logdir.rglob("metadata.tsv")
    assert set(metadata.read_text().split()) == {"up", "down"}
    assert len(list(logdir.rglob("tensors.tsv"))) == 1
    acc = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={"histograms": 0, "scalars": 0}
    ).Reload()
    assert "test/sequence_mse" in acc.Tags()["histograms"]
    content = acc.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {"eval/probe_accuracy", "eval/knn_accuracy", "eval/auroc"} <= {
        m.name.tag for m in experiment.metric_infos
    }
    assert acc.Scalars("eval/auroc")[-1].value == pytest.approx(in_training["eval/auroc"])


@pytest.mark.slow
def test_encode_names_what_is_missing(tmp_path):
    proc = run_cli(f"ckpt={tmp_path / 'nowhere.ckpt'}", script="scripts/encode.py")
    assert proc.returncode != 0
    assert "nowhere.ckpt: no such checkpoint file" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
def test_a_sweep_ends_with_its_table(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        *TINY,
        "trainer.max_epochs=1",
        "callbacks=none",
        "evaluate_after_train=true",
        "encoder=single",
        "readout=hidden,cell",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| job | readout | val/loss_best |" in proc.stdout and "eval/probe_accuracy" in proc.stdout
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["readout"] for r in rows) == ["cell", "hidden"]
    losses = [float(r["val/loss_best"]) for r in rows]
    assert losses == sorted(losses)  # best first
    assert all(r["eval/probe_accuracy"] for r in rows)

"""`python train.py data=arrays|ucr ...` on files the tests write themselves, in fresh processes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import TINY, run_cli
from tests.data.test_ucr import write_tsv

# TINY without the sines-only keys
MODEL = [o for o in TINY if not o.startswith("data.")] + ["data.batch_size=16"]


@pytest.mark.slow
def test_arrays_npy_with_variable_lengths_trains_and_tests(tmp_path):
    x = np.random.default_rng(0).standard_normal((64, 12, 3)).astype(np.float32)
    lengths = np.random.default_rng(1).integers(4, 13, 64)
    x[np.arange(12) >= lengths[:, None]] = np.nan  # trailing NaN: shorter sequences
    np.save(tmp_path / "series.npy", x)
    run_dir = tmp_path / "run"
    proc = run_cli(
        *MODEL,
        "data=arrays",
        f"data.path={tmp_path / 'series.npy'}",
        "encoder=single",
        "readout=cell",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"] == "arrays" and np.isfinite(metrics["test/mse"]) and metrics["steps"] == 8


@pytest.mark.slow
def test_ucr_folder_trains_with_the_official_test_split(tmp_path):
    write_tsv(tmp_path / "archive", "Tiny", n_train=30, n_test=12)
    run_dir = tmp_path / "run"
    proc = run_cli(
        *MODEL,
        "data=ucr",
        f"data.root={tmp_path / 'archive'}",
        "data.name=Tiny",
        "data.batch_size=8",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"] == "ucr" and np.isfinite(metrics["test/loss"])
    # the budget counts optimizer steps: TINY's 8, though an epoch here is 3 batches (24 sequences of 8)
    assert metrics["steps"] == 8


@pytest.mark.slow
def test_a_ucr_set_with_gaps_inside_its_series_trains_and_evaluates_by_default(tmp_path):
    """As the archive distributes DodgerLoopDay or MelbournePedestrian: NaN inside series."""
    folder = write_tsv(tmp_path / "archive", "Gappy", n_train=30, n_test=12)
    for split in ("TRAIN", "TEST"):
        path = folder / f"Gappy_{split}.tsv"
        lines = [line.split("\t") for line in path.read_text().splitlines()]
        for fields in lines[::4]:
            fields[2] = "NaN"  # the second step of every fourth series is missing
        path.write_text("\n".join("\t".join(f) for f in lines) + "\n")
    run_dir = tmp_path / "run"
    proc = run_cli(
        *MODEL,
        "data=ucr",
        f"data.root={tmp_path / 'archive'}",
        "data.name=Gappy",
        "data.batch_size=8",
        "evaluate_after_train=true",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "filled 8 missing values in Gappy_TRAIN.tsv and 3 missing values in Gappy_TEST.tsv"
        in (run_dir / "train.log").read_text()
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert np.isfinite(metrics["test/mse"]) and 0 <= metrics["eval/probe_accuracy"] <= 1


@pytest.mark.slow
def test_bad_data_exits_naming_the_file_before_anything_is_written(tmp_path):
    x = np.ones((20, 6, 2), np.float32)
    x[7, 2, 0] = np.inf
    np.save(tmp_path / "bad.npy", x)
    run_dir = tmp_path / "run"
    proc = run_cli(*MODEL, "data=arrays", f"data.path={tmp_path / 'bad.npy'}", f"hydra.run.dir={run_dir}")
    assert proc.returncode != 0
    assert f"{tmp_path / 'bad.npy'}: sequence 7 has the value inf at step 2, feature 0" in proc.stderr
    # Hydra's own config record is all there is: no checkpoints, metrics or event files
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "train.log"]

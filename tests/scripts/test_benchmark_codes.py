"""scripts/benchmark_codes.py: train and evaluate each archive set, one table with published numbers."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

TINY = [
    "model.hidden_size=8",
    "trainer.max_steps=8",
    "trainer.val_check_interval=4",
    "callbacks.progress_bar.refresh_rate=0",
]


def write_set(root: Path, name: str, n: int = 24, length: int = 16, seed: int = 0) -> None:
    """Two classes (rising and falling ramps) in the UCR 2018 .tsv layout."""
    rng = np.random.default_rng(seed)
    (root / name).mkdir(parents=True)
    for split in ("TRAIN", "TEST"):
        lines = []
        for i in range(n):
            ramp = np.linspace(-1, 1, length) * (1 if i % 2 else -1) + 0.1 * rng.normal(size=length)
            lines.append("\t".join([str(i % 2), *(f"{v:.4f}" for v in ramp)]))
        (root / name / f"{name}_{split}.tsv").write_text("\n".join(lines) + "\n")


def benchmark(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark_codes.py"), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_benchmark_trains_each_set_in_parallel_prints_one_table_and_resumes(tmp_path):
    root, out = tmp_path / "archives", tmp_path / "out"
    write_set(root, "Trace")  # a name with published numbers (benchmarks/published.csv)
    write_set(root, "Ramps", seed=1)
    args = ["--root", str(root), "--datasets", "Trace,Ramps", "--out", str(out), "--jobs", "2", "--", *TINY]
    proc = benchmark(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hydra/launcher=joblib hydra.launcher.n_jobs=2" in proc.stdout  # the command it ran
    header = (
        "| set | logistic | SVM | raw 1-NN | T-Loss K=10 | 1-NN DTW | test/mse | explained var. | minutes |"
    )
    assert header in proc.stdout
    with (out / "table.csv").open() as f:
        rows = {r["dataset"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == ["Ramps", "Trace"]
    for name, row in rows.items():
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert float(row["logistic"]) == metrics["eval/probe_accuracy"]
        assert float(row["raw_knn"]) == metrics["eval/raw_knn_accuracy"] == 1.0  # ramps up vs down
    assert float(rows["Trace"]["tloss_k10"]) == 0.99 and rows["Ramps"]["tloss_k10"] == ""
    assert "| **mean** |" in proc.stdout and "logistic mean" in proc.stdout
    assert (out / "table.md").read_text() in proc.stdout

    # a killed set (no metrics.json, a last.ckpt) continues; a finished one is not trained again
    finished = (out / "Trace" / "metrics.json").stat().st_mtime_ns
    (out / "Ramps" / "metrics.json").unlink()
    proc = benchmark(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "Trace" / "metrics.json").stat().st_mtime_ns == finished
    assert (out / "Ramps" / "metrics.json").is_file()
    log = (out / "Ramps" / "train.log").read_text()
    assert "Continuing" in log and "(skip_finished=true)" in log


@pytest.mark.slow
def test_a_set_that_is_not_there_is_named(tmp_path):
    proc = benchmark("--root", str(tmp_path), "--datasets", "Missing", "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert "data.name=Missing: no folder" in proc.stdout + proc.stderr
    assert "| Missing | — |" in proc.stdout and "not finished: Missing" in proc.stdout

"""seqae-benchmark-codes (seqae/commands/benchmark_codes.py): train and evaluate each archive set, one table with published numbers."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, wait_for

TINY = [
    "encoder.hidden_size=8",
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
        [sys.executable, "-m", "seqae.commands.benchmark_codes", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_the_panel_trains_every_set_of_a_folder_per_seed_summarises_and_resumes(tmp_path):
    root, out = tmp_path / "archives", tmp_path / "out"
    write_set(root, "Coffee")  # a name with reference numbers (seqae/commands/reference.csv)
    write_set(root, "Ramps", seed=1)
    args = ["--root", str(root), "--out", str(out), "--jobs", "2", "--seeds", "0,1", "--control", "--", *TINY]
    proc = benchmark(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hydra/launcher=joblib hydra.launcher.n_jobs=2" in proc.stdout  # the command it ran
    assert "seed=0,1 data.name=Coffee,Ramps" in proc.stdout  # every set of the folder, both seeds
    header = (
        "| set | seqae (logistic) | SVM | untrained | T-Loss K=10 | MiniRocket | 1-NN DTW | 1-NN raw "
        "| explained var. | minutes |"
    )
    assert header in proc.stdout
    with (out / "table.csv").open() as f:
        rows = {r["set"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == ["Coffee", "Ramps"]
    for name, row in rows.items():
        accuracies = [json.loads((out / f"seed{s}" / name / "eval.json").read_text()) for s in (0, 1)]
        logistic = [a["eval/probe_accuracy"] for a in accuracies]
        assert float(row["logistic"]) == pytest.approx(np.mean(logistic))
        assert float(row["logistic_std"]) == pytest.approx(np.std(logistic))
        control = json.loads((out / "control" / "seed0" / name / "metrics.json").read_text())
        assert control["steps"] == 1 and row["control"] != ""
        assert int(row["seeds"]) == 2
    assert float(rows["Coffee"]["tloss_k10"]) == 1.0 and rows["Ramps"]["tloss_k10"] == ""
    assert float(rows["Coffee"]["minirocket_ridge"]) == 1.0
    assert "| **mean** |" in proc.stdout and "logistic mean" in proc.stdout
    assert "against T-Loss K=10 over the 1 set it reports" in proc.stdout
    assert "mean rank over the 1 set with every reference" in proc.stdout
    assert "over the untrained control" in proc.stdout and "minutes per set" in proc.stdout
    assert "at chance" in proc.stdout
    assert (out / "table.md").read_text() in proc.stdout
    assert (out / "panel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a killed set (no metrics.json, a last.ckpt) continues; a finished one is not trained again
    finished = (out / "seed0" / "Coffee" / "metrics.json").stat().st_mtime_ns
    (out / "seed1" / "Ramps" / "metrics.json").unlink()
    proc = benchmark(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "seed0" / "Coffee" / "metrics.json").stat().st_mtime_ns == finished
    assert (out / "seed1" / "Ramps" / "metrics.json").is_file()
    log = (out / "seed1" / "Ramps" / "train.log").read_text()
    assert "Continuing" in log and "(skip_finished=true)" in log


@pytest.mark.slow
def test_a_killed_panel_stops_every_job_it_started_each_keeping_its_checkpoint(tmp_path):
    root, out = tmp_path / "archives", tmp_path / "out"
    write_set(root, "Ramps")
    write_set(root, "Slopes", seed=1)
    long_budget = [*TINY, "trainer.max_steps=1000000", "trainer.val_check_interval=100000"]
    args = ["--root", str(root), "--out", str(out), "--jobs", "2", "--", *long_budget]
    console = tmp_path / "console.txt"  # not a pipe: the idle workers keep theirs open for a while
    with console.open("w") as stderr:
        panel = subprocess.Popen(
            [sys.executable, "-m", "seqae.commands.benchmark_codes", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    logs = [out / "seed0" / name / "train.log" for name in ("Ramps", "Slopes")]
    try:
        assert wait_for(lambda: all(f.is_file() and "Training budget" in f.read_text() for f in logs), 300)
        time.sleep(2)  # both jobs are training
        panel.send_signal(signal.SIGTERM)
        panel.wait(timeout=120)
    finally:
        panel.kill()
    assert panel.returncode == 128 + signal.SIGTERM
    assert "run the same command again" in console.read_text()
    # Hydra's joblib workers outlive a killed parent; each job must have been stopped, not left training
    assert wait_for(lambda: all("Stopped on SIGTERM" in f.read_text() for f in logs), 60)
    assert all((f.parent / "checkpoints" / "last.ckpt").is_file() for f in logs)
    assert not any((f.parent / "metrics.json").exists() for f in logs)


@pytest.mark.slow
def test_a_set_that_is_not_there_is_named(tmp_path):
    proc = benchmark("--root", str(tmp_path), "--datasets", "Missing", "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert "data.name=Missing: no folder" in proc.stdout + proc.stderr
    assert "| Missing | — |" in proc.stdout and "not finished: Missing" in proc.stdout


def test_table_only_into_a_new_folder_and_an_empty_root_are_answered(tmp_path):
    proc = benchmark(
        "--root",
        str(tmp_path),
        "--datasets",
        "Coffee",
        "--out",
        str(tmp_path / "new" / "out"),
        "--table-only",
    )
    assert "| Coffee | — |" in proc.stdout and "Traceback" not in proc.stderr
    proc = benchmark("--root", str(tmp_path / "empty"))
    assert proc.returncode == 2 and "holds no data set" in proc.stderr and "Traceback" not in proc.stderr

"""One run folder, one writer: concurrent starts and resumes of the same folder through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, TINY, run_cli

SLOWER = [*TINY, "trainer.max_steps=40", "trainer.val_check_interval=4", "threads=1"]


def start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_concurrent_starts_into_one_folder_leave_one_run(tmp_path):
    run = tmp_path / "run"
    procs = [start(*SLOWER, f"hydra.run.dir={run}") for _ in range(3)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code == 0 for code, _ in results) == [False, False, True]
    for code, stderr in results:
        if code:
            assert "is in use" in stderr or "already holds an earlier run" in stderr, stderr[-2000:]
            assert "Traceback" not in stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # no -v1
    pids = {p.name.split(".")[-2] for p in (run / "tensorboard").glob("events.out.tfevents.*")}
    assert len(pids) == 1  # one process wrote the TensorBoard run
    assert not (run / ".seqae.lock").exists()  # the finished run gave its folder back


@pytest.mark.slow
def test_a_second_resume_of_a_running_run_stops_naming_the_first(tmp_path):
    run = tmp_path / "run"
    killed = start(*SLOWER, "trainer.max_steps=400", f"hydra.run.dir={run}")
    while not (run / "checkpoints" / "last.ckpt").exists():
        assert killed.poll() is None, killed.stderr.read()[-2000:]
        time.sleep(0.01)
    killed.kill()
    killed.wait()
    first = start(f"resume={run}")
    while "pid" not in ((run / ".seqae.lock").read_text() if (run / ".seqae.lock").exists() else ""):
        time.sleep(0.01)
    time.sleep(0.5)  # the first resume now holds the folder
    second = run_cli(f"resume={run}")
    assert second.returncode != 0
    assert f"The run folder {run} is in use: host" in second.stderr and f"pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    assert "held it and is gone" in first.stderr.read()  # the killed run's lock, taken over
    assert (run / "metrics.json").is_file()

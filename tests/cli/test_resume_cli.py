"""A run killed with SIGKILL and resumed from a mid-epoch checkpoint ends exactly where an
uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY, run_cli, wait_for

# Dropout in a stacked encoder draws random numbers every step: exactness needs the RNG states.
RUN = [
    *TINY,
    "data.num_sequences=256",
    "data.seq_len=16",
    "encoder=stacked",
    "encoder.dropout=0.3",
    "trainer.max_steps=40",  # 13 batches an epoch: the first checkpoint (step 6) is mid-epoch
    "trainer.val_check_interval=6",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=4",
    "threads=1",
]


def numbers(metrics: dict) -> dict:
    """The metrics and counts; not the wall time each process spent."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and k != "seconds"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "budget",
    [
        [],
        ["trainer.max_steps=-1", "trainer.max_epochs=3"],
    ],  # 40 steps in one Lightning epoch; 3 epochs of 13 batches
    ids=["steps", "epochs"],
)
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, budget):
    whole = tmp_path / "whole"
    proc = run_cli(*RUN, *budget, f"hydra.run.dir={whole}")
    assert proc.returncode == 0, proc.stderr[-3000:]

    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *RUN, *budget, f"hydra.run.dir={killed}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed / "checkpoints" / "last.ckpt"
    wait_for(lambda: last.exists() or child.poll() is not None, 120, interval=0.005)
    child.send_signal(signal.SIGKILL)  # 6 of the first epoch's 13 batches are done
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert last.exists() and not (killed / "metrics.json").exists()

    proc = run_cli(f"resume={killed}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads((killed / "metrics.json").read_text())
    expected = json.loads((whole / "metrics.json").read_text())
    assert numbers(resumed) == pytest.approx(numbers(expected), abs=1e-6, rel=0)
    assert resumed["encoder"] == "stacked"  # the run's own overrides came back

    # the same folder, the same TensorBoard run (no second version folder), config kept as it was
    assert not list((killed / "tensorboard").glob("version_*"))
    assert len(list((killed / "tensorboard").glob("events.out.tfevents.*"))) >= 2
    assert len(list((killed / ".hydra").glob("resume-*/config.yaml"))) == 1
    assert "encoder.dropout=0.3" in (killed / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "ddp"])
def test_sigterm_saves_at_a_step_end_and_the_resumed_run_matches_an_uninterrupted_one(tmp_path, processes):
    """`kill <pid>`, or a scheduler outside SLURM. Under DDP every rank gets the signal at once, as
    from a scheduler or Ctrl-C in a terminal, each at a different line: the ranks must still agree
    on the step to stop at, and neither deadlock nor leave one rank waiting."""
    longer = [*RUN, "trainer.max_steps=200", *(["trainer=ddp_cpu"] if processes == 2 else [])]
    whole = tmp_path / "whole"
    assert run_cli(*longer, f"hydra.run.dir={whole}").returncode == 0

    stopped = tmp_path / "stopped"
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *longer, f"hydra.run.dir={stopped}"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the run's ranks, nothing of pytest's
    )
    last = stopped / "checkpoints" / "last.ckpt"
    wait_for(lambda: last.exists() or child.poll() is not None, 120, interval=0.005)
    os.killpg(child.pid, signal.SIGTERM)
    try:
        stdout, stderr = child.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        pytest.fail(f"the run did not stop within 120 s of SIGTERM:\n{child.communicate()[1][-3000:]}")
    assert child.returncode == 1
    assert "Traceback" not in stderr
    assert "weights_only" not in stdout  # Lightning's note on a save that did not say what it saves
    assert f"saved in {last}. Continue it with `python train.py resume={stopped}`" in stderr
    assert not (stopped / "metrics.json").exists()

    assert run_cli(f"resume={stopped}").returncode == 0
    resumed = json.loads((stopped / "metrics.json").read_text())
    expected = json.loads((whole / "metrics.json").read_text())
    assert numbers(resumed) == pytest.approx(numbers(expected), abs=1e-6, rel=0)


@pytest.mark.slow
def test_a_rerun_sweep_skips_finished_jobs_and_continues_the_others(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "trainer.max_epochs=1", "encoder=single,stacked", f"hydra.sweep.dir={sweep}"]
    assert run_cli(*args).returncode == 0
    finished = (sweep / "0" / "metrics.json").read_bytes()
    (sweep / "1" / "metrics.json").unlink()  # as if job 1 had been killed before the end

    proc = run_cli(*args, "skip_finished=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "0" / "metrics.json").read_bytes() == finished  # not trained again
    assert "Skipping" in proc.stdout and "Continuing" in proc.stdout
    assert (sweep / "1" / "metrics.json").exists()

"""SLURM for real, on the one-host cluster of scripts/local_slurm.sh (`make test-cluster` starts it):
a sweep whose jobs are 2-task DDP jobs, and jobs preempted by SLURM's pre-timeout signal or SIGTERM
that are requeued and end exactly as if nothing had happened."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, run_cli

# Long enough (200 steps, a few seconds) for a signal to arrive mid-training; dropout and
# deterministic kernels, so exactness needs the RNG states and the loader's position too.
RUN = [
    *TINY,
    "data.num_sequences=256",
    "data.seq_len=16",
    "encoder=stacked",
    "encoder.dropout=0.3",
    "trainer.max_steps=200",
    "trainer.val_check_interval=10",
    "trainer.deterministic=true",
    "threads=1",
    "seed=7",
    "model.lr=0.001,0.003",
]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.timeout_min=10"]


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    """The cluster must be up: a missing one fails (with the way to start it), it never skips."""
    if "SLURM_CONF" not in os.environ:
        pytest.fail("SLURM_CONF is not set: run these through `make test-cluster` (scripts/local_slurm.sh).")
    nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    assert nodes.returncode == 0 and "idle" in nodes.stdout, f"no idle SLURM node: {nodes.stderr}"


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> Path:
    """The same sweep with 2-process DDP on this machine, no SLURM: the reference."""
    sweep = tmp_path_factory.mktemp("local") / "sweep"
    proc = run_cli("-m", *RUN, "trainer=ddp_cpu", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def numbers(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and k != "seconds"}


def log_messages(output: str) -> list[str]:
    """The log records in a console's output, without the prefix that says who printed them
    (submitit's own handlers print ``submitit WARNING (<time>) - ``, Hydra's ``[<time>][HYDRA] ``)."""
    prefix = re.compile(r"^(submitit [A-Z]+ \([^)]*\) - |\[[^\]]*\]\[[^\]]*\] )")
    return [prefix.sub("", line) for line in output.splitlines() if prefix.match(line)]


def test_a_slurm_sweep_runs_each_job_as_a_two_task_ddp_job_like_a_local_sweep(local_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", *RUN, *SLURM, "trainer=ddp_cpu", f"hydra.sweep.dir={sweep}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    messages = log_messages(proc.stdout + proc.stderr)
    assert messages, "no log records on the sweep's console"
    repeated = {m for m in messages if messages.count(m) > 1}
    assert not repeated, f"printed more than once: {repeated}"
    assert (sweep / "summary.csv").is_file() and (sweep / "summary.md").is_file()
    for job in ("0", "1"):
        run = sweep / job
        assert sorted(p.name for p in run.glob("*.log")) == ["train.log", "train_ddp_process_1.log"]
        # SLURM started both ranks (submitit tasks) and Lightning's SLURMEnvironment connected them
        rank_1 = (run / "train_ddp_process_1.log").read_text()
        assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in rank_1
        assert numbers(run) == pytest.approx(numbers(local_sweep / job), abs=1e-6, rel=0)


def array_task(sweep: Path, job: int) -> str | None:
    """The SLURM id (<array>_<task>) of the sweep's job, once it runs."""
    ids = [p.name for p in (sweep / ".submitit").glob(f"*_{job}") if p.is_dir()]
    return ids[0] if ids else None


def test_preempted_jobs_are_requeued_and_end_like_uninterrupted_ones(local_sweep, tmp_path):
    """Job 0 gets the pre-timeout signal (scancel --signal=USR1, as --signal=USR1@<s> sends it),
    job 1 a SIGTERM. Each saves at a step's end, is requeued, and continues in its own folder."""
    sweep = tmp_path / "sweep"
    sweeper = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            *RUN,
            *SLURM,
            "trainer=ddp_cpu",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    signalled: dict[int, str] = {}
    last_seen_queued = time.monotonic()
    while sweeper.poll() is None and time.monotonic() < deadline:
        # without accounting (sacct), submitit waits for ever for a job that ended without a result
        if subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip():
            last_seen_queued = time.monotonic()
        elif time.monotonic() - last_seen_queued > 30:
            break
        for job, sig in ((0, "USR1"), (1, "TERM")):
            if job not in signalled and (sweep / str(job) / "checkpoints" / "last.ckpt").exists():
                signalled[job] = array_task(sweep, job)
                subprocess.run(["scancel", f"--signal={sig}", signalled[job]], check=True)
        # SLURM holds a requeued job back for a while (Reason=BeginTime); let it start now
        held = subprocess.run(["squeue", "-h", "-t", "PD", "-o", "%i %r"], capture_output=True, text=True)
        for line in held.stdout.splitlines():
            if line.endswith("BeginTime"):
                subprocess.run(["scontrol", "update", f"JobId={line.split()[0]}", "StartTime=now"])
        time.sleep(0.05)
    if sweeper.poll() is None:
        sweeper.kill()
        pytest.fail(
            f"the sweep did not end (300 s at most; 30 s with no job queued)\n{what_slurm_and_the_jobs_say(sweep)}"
        )
    output = sweeper.communicate()[0]
    assert sweeper.returncode == 0, output[-3000:]
    assert sorted(signalled) == [0, 1]
    for job, sig in ((0, "SIGUSR1"), (1, "SIGTERM")):
        run = sweep / str(job)
        log = (run / "train.log").read_text()
        assert f"Stopped on {sig} after step" in log and f"SLURM job {signalled[job]} is requeued" in log
        assert "(SLURM started this job again)" in log
        assert numbers(run) == pytest.approx(numbers(local_sweep / str(job)), abs=1e-6, rel=0)


def what_slurm_and_the_jobs_say(sweep: Path) -> str:
    """For a sweep that hangs: the queue, and the end of each job's logs (seqae's and submitit's)."""
    queue = subprocess.run(["squeue", "-o", "%i %T %r %M"], capture_output=True, text=True).stdout
    logs = (
        sorted(sweep.glob("*/*.log"))
        + sorted(sweep.glob(".submitit/*/*.out"))
        + sorted(sweep.glob(".submitit/*/*.err"))
    )
    tails = [
        f"--- {p.relative_to(sweep)}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
        for p in logs
    ]
    return "\n".join([f"squeue:\n{queue}", *tails])

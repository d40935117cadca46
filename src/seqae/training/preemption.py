"""Preemption that loses nothing: stop at the end of a training step, with a checkpoint that resumes
exactly, and under SLURM requeue the job so that it continues in the same run folder.

The signal handlers only mark the run; everything else happens at the next training step's end,
where the ranks of a DDP run agree (one all-reduce) to stop at the same step. There the checkpoint is
written, as ``checkpoints/last.ckpt``, which resumes to the same metrics as a run that was never
stopped, and under SLURM rank 0 asks for the requeue with ``scontrol requeue``. Elsewhere the run
stops with ``python train.py resume=<run>`` as the way on.

Lightning's own handlers do more inside the handler, which is wherever training happens to be:
its SLURM handler (``SLURMEnvironment(auto_requeue=True)``) saves a checkpoint, halfway through an
optimizer step, say, and its SIGTERM handler broadcasts to the other ranks. A collective started
inside a signal handler meets a different collective on the other rank and deadlocks the job (or
one rank stops alone while the other waits). So ``Preemption`` installs its requeue-signal handler
before Lightning registers its own (Lightning keeps one that is already there), and takes SIGTERM
back once Lightning has registered its handler, before the first training step.

The job that SLURM starts again finds its own folder (``SLURM_RESTART_COUNT`` > 0) and continues from
``last.ckpt``: see ``restarted_by_slurm`` in ``seqae/runs/resume.py``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)


class Preempted(SystemExit):
    """The run stopped on a signal after saving its checkpoint. A ``SystemExit``, so the job ends
    without a traceback and submitit records no result (the requeued job writes it)."""


class Preemption(L.Callback):
    """On ``requeue_signal`` (SLURM's pre-timeout signal: ``sbatch --signal=USR1@<seconds>``) or
    SIGTERM, save ``<dirpath>/last.ckpt`` at the end of the current training step, requeue the SLURM
    job when there is one, and stop."""

    def __init__(self, dirpath: str, requeue_signal: str = "SIGUSR1") -> None:
        self.dirpath = Path(dirpath)
        self.requeue_signal = signal.Signals[requeue_signal]
        self.signalled: str | None = None
        self._before: dict[signal.Signals, Any] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signalled = None
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only
        watched = [signal.SIGTERM, *([self.requeue_signal] if SLURMEnvironment.detect() else [])]
        self._before = {s: signal.signal(s, self._note_signal) for s in watched}

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_back_sigterm()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_back_sigterm()

    def _take_back_sigterm(self) -> None:
        """Lightning registers its SIGTERM handler after ``on_fit_start``; replace it (see above)."""
        if self._before and signal.getsignal(signal.SIGTERM) != self._note_signal:
            signal.signal(signal.SIGTERM, self._note_signal)

    def _note_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = self.signalled or signal.Signals(signum).name

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        reason = self.signalled or ("SIGTERM" if trainer.received_sigterm else None)
        if trainer.world_size > 1:  # every rank stops at the same step, whichever was told
            if not trainer.strategy.reduce_boolean_decision(reason is not None, all=False):
                return
            reason = reason or "a signal to another rank"
        elif reason is None:
            return
        checkpoint = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(checkpoint, weights_only=False)  # all of it: it resumes the run
        if not trainer.is_global_zero:
            raise Preempted(1)  # rank 0 requeues the job and tells the user
        if SLURMEnvironment.detect() and requeue_slurm_job():
            how = f"SLURM job {slurm_job_id()} is requeued and continues from it in {self.dirpath.parent}."
        else:
            how = f"Continue it with `python train.py resume={self.dirpath.parent}`."
        message = f"Stopped on {reason} after step {trainer.global_step}, saved in {checkpoint}. {how}"
        log.warning(message)
        raise Preempted(message)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._before.items():
            signal.signal(signum, handler)
        self._before = {}


def slurm_job_id() -> str:
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


def requeue_slurm_job() -> bool:
    """``scontrol requeue`` this job; False (logged) when SLURM refuses, e.g. for a job that
    cannot be requeued."""
    result = subprocess.run(["scontrol", "requeue", slurm_job_id()], capture_output=True, text=True)
    if result.returncode:
        log.warning("SLURM did not requeue job %s: %s", slurm_job_id(), result.stderr.strip())
    return result.returncode == 0

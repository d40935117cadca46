"""Running on more hardware: DDP jobs inside Hydra multiruns, and precision the hardware can run.

Why ``run_ddp_job`` exists. Lightning's ``ddp`` strategy starts ranks 1..N-1 by running the
script again with its own command line. In a single run that works: Lightning adds
``hydra.run.dir=<this run>`` and every rank writes into the one run folder. In a multirun the
command line is the whole sweep (``-m lr=0.01,0.02``), so each extra rank starts a sweep of its
own, with a second sweep folder, and the ranks only agree while they happen to walk the same job
list in lockstep (Lightning #11300, Hydra #2070; Optuna's sampler makes them disagree). So in a
multirun seqae does not let Lightning re-run the script: the sweep process starts every rank of
the job itself, each as a plain single run of exactly this job's overrides in this job's folder,
the way torchrun would (``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_PORT`` set, so Lightning sees
processes created externally and starts none), waits for them and returns rank 0's metrics.
The sweep process itself never joins a process group, so the next job starts clean, with any
world size. Jobs whose processes a cluster already started (SLURM through the submitit launcher,
torchrun) and ``ddp_spawn``/``ddp_fork`` need none of this and run as they are.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate, to_absolute_path
from lightning.fabric.plugins.environments.lightning import find_free_network_port
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig

from seqae.errors import ConfigError
from seqae.runs.folder import HELD_BY_PARENT, RunFolder

log = logging.getLogger(__name__)

# Hydra overrides a rank must not inherit from the sweep: it runs one job, in the job's folder.
SWEEP_ONLY_OVERRIDES = (
    "hydra.mode",
    "hydra.run",
    "hydra.sweep",
    "hydra.sweeper",
    "hydra/sweeper",
    "hydra.launcher",
    "hydra/launcher",
    "hydra.output_subdir",
    "hydra.job.name",
)


def check_precision(trainer: L.Trainer, precision: Any) -> None:
    """Refuse fp16 autocast on a CPU instead of letting Lightning quietly train in bf16."""
    if str(precision) in ("16", "16-mixed") and isinstance(trainer.accelerator, CPUAccelerator):
        raise ConfigError(
            f"trainer.precision={precision} runs on a CUDA GPU only: CPUs have no fp16 autocast kernels "
            f"for the LSTM, and Lightning would silently switch this run to bf16-mixed. Use "
            f"trainer=gpu trainer.precision=16-mixed on a GPU, or trainer.precision=bf16-mixed "
            f"(or 32-true, the default) on this CPU."
        )


def ddp_job_in_multirun(cfg: DictConfig) -> int:
    """How many processes this multirun job needs started for it (0: none, the job runs as it is)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return 0
    # Lightning decides (strategy, devices, cluster environment); a bare Trainer is enough to ask it.
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    launcher = trainer.strategy.launcher
    if (
        not isinstance(launcher, _SubprocessScriptLauncher)
        or launcher.cluster_environment.creates_processes_externally
    ):
        return 0  # one process, ddp_spawn/ddp_fork, or ranks a cluster (SLURM, torchrun) started
    if launcher.num_nodes > 1:
        raise ConfigError(
            f"trainer.num_nodes={launcher.num_nodes} in a multirun needs a cluster launcher that starts "
            f"one process per device on every node: hydra/launcher=slurm (conf/hydra/launcher/slurm.yaml "
            f"asks SLURM for trainer.num_nodes nodes with trainer.devices tasks each), or the plugin's "
            f"own hydra/launcher=submitit_slurm with hydra.launcher.nodes={launcher.num_nodes} "
            f"hydra.launcher.tasks_per_node={launcher.num_processes}."
        )
    return launcher.num_processes


def run_ddp_job(num_processes: int) -> dict[str, Any]:
    """Run this multirun job as ``num_processes`` fresh single-run processes; returns rank 0's metrics."""
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    command = [
        *entry_command(),
        *rank_overrides(list(hydra_cfg.overrides.task), list(hydra_cfg.overrides.hydra)),
    ]
    command += [f'hydra.run.dir="{output_dir}"', "hydra.mode=RUN", "hydra.output_subdir=null"]
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(find_free_network_port()),
        "WORLD_SIZE": str(num_processes),
        "NODE_RANK": "0",
        HELD_BY_PARENT: str(output_dir),  # this job holds the folder's lock for its ranks
    }
    log.info("Job %s runs as %d DDP processes: %s", hydra_cfg.job.num, num_processes, " ".join(command))
    procs = [
        subprocess.Popen(
            command + ([f"hydra.job.name=train_ddp_process_{rank}"] if rank else []),
            env={**env, "LOCAL_RANK": str(rank)},
            cwd=hydra_cfg.runtime.cwd,
        )
        for rank in range(num_processes)
    ]
    wait_for_ranks(procs, output_dir)
    metrics_file = RunFolder(output_dir).metrics
    if not metrics_file.is_file():
        raise RuntimeError(
            f"The DDP processes of {output_dir} exited cleanly but rank 0 wrote no {metrics_file.name}."
        )
    return json.loads(metrics_file.read_text())


def entry_command() -> list[str]:
    """How this program was started: ``python train.py`` or ``python -m pkg.module``.

    ``sys.argv[0]`` decides: a joblib (loky) worker keeps the user's argv but has a ``__main__`` of
    its own, which is why this does not simply copy Lightning's ``__main__.__spec__`` test.
    """
    import __main__

    script = Path(to_absolute_path(sys.argv[0]))
    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.origin and Path(spec.origin).resolve() == script.resolve():
        return [sys.executable, "-m", spec.name]
    return [sys.executable, str(script)]


def rank_overrides(task: list[str], hydra: list[str]) -> list[str]:
    """This job's own overrides, plus the user's Hydra settings that still apply to a single run."""
    keep = [o for o in hydra if not o.lstrip("+~").startswith(SWEEP_ONLY_OVERRIDES)]
    return [*task, *keep]


def wait_for_ranks(procs: list[subprocess.Popen], output_dir: Path, poll_s: float = 0.2) -> None:
    """Wait for every rank; when one fails, stop the others (they would wait for it forever)."""
    try:
        while True:
            failed = [(rank, p.returncode) for rank, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed:
                rank, code = failed[0]
                logs = "train.log" if rank == 0 else f"train_ddp_process_{rank}.log"
                raise RuntimeError(
                    f"DDP rank {rank} of the job in {output_dir} exited with code {code}; the other ranks "
                    f"were stopped. Its error is printed above and logged in {output_dir / logs}."
                )
            if all(p.returncode == 0 for p in procs):
                return
            time.sleep(poll_s)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

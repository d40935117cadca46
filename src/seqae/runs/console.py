"""One console: each message printed once (and written once to ``train.log``), without third-party noise.

Hydra's job logging gives the root logger a console handler and a file handler. The ``lightning``
package adds a console handler of its own at import, so every Lightning message would be printed
twice; it also advertises a cloud logger on every run, and its tree utilities trip a torch
deprecation warning on every fit. ``tidy_console()`` routes Lightning's messages through the root
logger alone and drops those two. ``SweepConsole`` does the same for submitit in a SLURM sweep's
launching process.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# Messages Lightning prints on every run that say nothing about the run.
ADVERTISEMENTS = ("💡 Tip:",)


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERTISEMENTS)


def print_through_root(name: str) -> None:
    """A library logger's own console handlers go; its records reach the console (and train.log)
    through the root logger's handlers, which Hydra configured, once."""
    logger = logging.getLogger(name)
    for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
        logger.removeHandler(handler)
    logger.propagate = True


def tidy_console() -> None:
    """Idempotent; call it once Hydra has configured logging and Lightning is imported."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        print_through_root(name)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdvertisements) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdvertisements())
    # torch 2.13 deprecates isinstance checks on LeafSpec, which Lightning's _pytree still makes
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # model.steps_per_call > 1 asks Lightning for the loader's iterator (stable in practice since 2.0),
    # and Lightning says so on every fit.
    warnings.filterwarnings("ignore", message="Found `dataloader_iter` argument in the `training_step`")
    warnings.filterwarnings("ignore", message="You are using the `dataloader_iter` step flavor")
    # Under automatic optimization Lightning offers the plateau scheduler every step, before the first
    # validation too; the model steps it on each validation itself (lr_scheduler_step).
    warnings.filterwarnings(
        "ignore", message="ReduceLROnPlateau conditioned on metric val/loss which is not available"
    )
    # on a machine with SLURM installed, every run outside SLURM is told to prepend srun
    warnings.filterwarnings(
        "ignore", message=r"The `srun` command is available on your system but is not used"
    )
    log_rank_to_own_file()


def log_rank_to_own_file() -> None:
    """Ranks a cluster started (SLURM tasks, torchrun) run the user's command as it is, so Hydra
    points every one of them at ``train.log``; the ranks after the first write to
    ``train_ddp_process_<rank>.log`` instead, as the ranks Lightning starts itself do."""
    from lightning.pytorch.utilities import rank_zero_only

    if not rank_zero_only.rank:
        return
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        path = Path(handler.baseFilename)
        if path.name == "train.log":
            own = logging.FileHandler(path.with_name(f"train_ddp_process_{rank_zero_only.rank}.log"))
            own.setFormatter(handler.formatter)
            own.setLevel(handler.level)
            root.removeHandler(handler)
            handler.close()
            root.addHandler(own)


class SweepConsole(Callback):
    """Hydra callback. submitit configures its logger at import with two console handlers, stdout
    and stderr, and lets it propagate to Hydra's, so each of its warnings (one per status poll
    where ``sacct`` fails) would reach a terminal three times. Route it through Hydra's alone."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "submitit" not in str(config.hydra.launcher.get("_target_", "")):
            return
        import submitit  # noqa: F401  (configures the logger that is tidied here)

        print_through_root("submitit")

"""Shared fixtures: composed configs with tiny data, and a runner for the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

import seqae.conf
from seqae.train import compose_config as compose_train_config

ROOT = Path(__file__).resolve().parents[1]
CONF = Path(seqae.conf.__file__).parent  # the configs ship in the package

# Small enough that a whole fit takes about a second on one core.
TINY = [
    "data.num_sequences=64",
    "data.seq_len=12",
    "data.num_features=3",
    "data.batch_size=16",
    "encoder.hidden_size=8",
    "trainer.max_steps=8",
    "trainer.val_check_interval=4",
    "trainer.accelerator=cpu",
    "++callbacks.progress_bar.refresh_rate=0",  # ++: also fine with callbacks=none
]

torch.set_num_threads(1)


def recurrent(hidden_size: int, **encoder: Any) -> dict[str, dict[str, Any]]:
    """``SequenceAutoencoder`` keyword arguments for seqae's recurrent encoder at this width (and
    ``num_layers``, ``readout``, ``cell``, ... as given) with a repeat decoder as wide, deep and of
    the same cell, as ``encoder=... decoder=repeat`` builds them."""
    shared = {"hidden_size": hidden_size} | {k: encoder[k] for k in ("num_layers", "cell") if k in encoder}
    return {
        "encoder": {"_target_": "seqae.models.encoders.RecurrentEncoder", **shared, **encoder},
        "decoder": {"_target_": "seqae.models.decoders.RepeatDecoder", **shared},
    }


# The CUDA paths (training in each precision, encoding) are checked where a GPU is; CI has none.
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def quiet_trainer(root: Path, **kwargs) -> L.Trainer:
    """A real CPU Trainer with no logger, progress bar or summary; kwargs override."""
    args = dict(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        use_distributed_sampler=False,
    )
    return L.Trainer(**{**args, **kwargs})


def wait_for(condition: Callable[[], bool], seconds: float, interval: float = 0.5) -> bool:
    """Poll ``condition`` every ``interval`` seconds until it holds (True) or ``seconds`` pass (False)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python train.py <overrides>` would see, with HydraConfig set as in a real run."""
    return compose_train_config(overrides, output_dir)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        action="store_true",
        help="run tests/cluster/ too: they need the local SLURM cluster (make test-cluster starts it)",
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # tests/cluster/ is its own suite (make test-cluster), so `make test` needs no cluster
    if collection_path.name == "cluster" and not config.getoption("--cluster"):
        return True
    return None


@pytest.fixture
def tiny_cfg(tmp_path: Path):
    def make(*overrides: str) -> DictConfig:
        return compose_config([*TINY, *overrides], tmp_path / "run")

    yield make
    GlobalHydra.instance().clear()


def run_cli(
    *args: str, script: str = "train.py", timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run one of the project's entry points in a fresh process, as a user would (``env``: more variables)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HYDRA_FULL_ERROR": "0",
        "PYTHONWARNINGS": "ignore",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

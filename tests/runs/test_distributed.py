"""Precision checks, when a multirun job starts its own DDP processes, and the launcher and sweeper configs."""

from __future__ import annotations

import math
import subprocess
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig

import __main__
import seqae.models.autoencoder
import seqae.training.module
from seqae.models.layers import masked_mse
from seqae.runs.distributed import ddp_job_in_multirun, entry_command, rank_overrides, wait_for_ranks
from seqae.train import train
from tests.conftest import needs_cuda


def cpu_has_bf16_lstm() -> bool:
    """oneDNN has no bf16 LSTM primitive on CPUs without AVX512-BF16-class support (see research notes)."""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.LSTM(2, 2, batch_first=True)(torch.zeros(1, 3, 2))
        return True
    except RuntimeError:
        return False


@pytest.mark.skipif(not cpu_has_bf16_lstm(), reason="this CPU has no bf16 LSTM kernel")
def test_bf16_mixed_on_cpu_trains_with_the_loss_in_float32(tiny_cfg, monkeypatch):
    seen = []  # (autocast on, autocast dtype, loss dtype, loss) for every training loss

    def recording_mse(recon, target, lengths):
        loss = masked_mse(recon, target, lengths)
        if torch.is_grad_enabled():
            seen.append(
                (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), loss.dtype, float(loss))
            )
        return loss

    monkeypatch.setattr(seqae.models.autoencoder, "masked_mse", recording_mse)
    metrics = train(tiny_cfg("trainer=cpu", "trainer.precision=bf16-mixed", "callbacks=none", "logger=csv"))

    assert metrics["steps"] == len(seen) == 8
    assert {s[:3] for s in seen} == {(True, torch.bfloat16, torch.float32)}  # bf16 autocast, float32 loss
    assert all(math.isfinite(s[3]) for s in seen) and math.isfinite(metrics["test/loss"])


@needs_cuda
@pytest.mark.parametrize(
    ("precision", "autocast_dtype"),
    [("32-true", None), ("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16)],
)
def test_a_gpu_trains_in_each_precision_and_its_checkpoint_loads_on_a_cpu(
    tiny_cfg, monkeypatch, precision, autocast_dtype
):
    seen = set()  # (device, autocast dtype or None, loss dtype) of every training loss

    def recording_mse(recon, target, lengths):
        loss = masked_mse(recon, target, lengths)
        if torch.is_grad_enabled():
            autocast = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
            seen.add((recon.device.type, autocast, loss.dtype))
        return loss

    monkeypatch.setattr(seqae.models.autoencoder, "masked_mse", recording_mse)
    cfg = tiny_cfg("trainer=gpu", "trainer.accelerator=gpu", f"trainer.precision={precision}", "logger=csv")
    metrics = train(cfg)

    assert seen == {("cuda", autocast_dtype, torch.float32)}
    assert metrics["steps"] == 8 and math.isfinite(metrics["test/loss"])
    best = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    model = seqae.training.module.SequenceAutoencoder.load(best, map_location="cpu")
    assert torch.isfinite(model.encode(torch.randn(2, 12, 3))).all()


@pytest.mark.parametrize("precision", ["16-mixed", "16"])
def test_fp16_on_cpu_fails_at_start_up_naming_the_key_and_the_way_out(tiny_cfg, precision):
    cfg = tiny_cfg("trainer=cpu", f"trainer.precision={precision}")
    with pytest.raises(
        ValueError, match=rf"trainer.precision={precision} runs on a CUDA GPU only.*bf16-mixed"
    ):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()  # refused before training


def multirun_cfg(tiny_cfg, *overrides: str):
    return tiny_cfg("hydra.mode=MULTIRUN", *overrides)


@pytest.mark.parametrize(
    ("overrides", "processes"),
    [
        (["trainer=ddp_cpu"], 2),  # Lightning would re-run the whole sweep in rank 1
        (["trainer.devices=2", "trainer.strategy=auto"], 2),  # auto picks that same ddp
        (["trainer=cpu"], 0),
        (["trainer=ddp_cpu", "trainer.strategy=ddp_spawn"], 0),  # spawns from this process: no re-run
    ],
)
def test_a_multirun_job_starts_its_own_ranks_only_when_lightning_would_rerun_the_script(
    tiny_cfg, overrides, processes
):
    assert ddp_job_in_multirun(multirun_cfg(tiny_cfg, *overrides)) == processes


def test_a_single_run_leaves_ddp_to_lightning(tiny_cfg):
    assert ddp_job_in_multirun(tiny_cfg("trainer=ddp_cpu")) == 0


def test_ranks_a_cluster_started_are_left_alone(tiny_cfg, monkeypatch):
    # What SLURM (submitit launcher) or torchrun look like to Lightning: the processes exist already.
    for key, value in {"LOCAL_RANK": "0", "NODE_RANK": "0", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    assert ddp_job_in_multirun(multirun_cfg(tiny_cfg, "trainer=ddp_cpu")) == 0


def test_multi_node_ddp_in_a_multirun_without_a_cluster_launcher_fails_clearly(tiny_cfg):
    with pytest.raises(
        ValueError, match=r"trainer.num_nodes=2 in a multirun needs a cluster launcher.*hydra/launcher=slurm"
    ):
        ddp_job_in_multirun(multirun_cfg(tiny_cfg, "trainer=ddp_cpu", "trainer.num_nodes=2"))


def test_ranks_get_the_jobs_overrides_and_user_hydra_settings_but_nothing_of_the_sweep():
    task = ["trainer=ddp_cpu", "model.lr=0.01"]
    hydra = [
        "hydra.sweep.dir=/tmp/s",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_trials=3",
        "hydra.job_logging.root.level=WARNING",
    ]
    assert rank_overrides(task, hydra) == [*task, "hydra.job_logging.root.level=WARNING"]


@pytest.mark.parametrize("started_as", ["python -m", "joblib worker"])
def test_ranks_restart_the_users_program_even_from_a_joblib_worker(tiny_cfg, monkeypatch, started_as):
    tiny_cfg()  # HydraConfig: a relative argv[0] is relative to the directory the user started in
    script = Path(HydraConfig.get().runtime.cwd) / "train.py"
    if started_as == "python -m":  # argv[0] is the module's own file
        spec, expected = ModuleSpec("pkg.train", None, origin=str(script)), ["-m", "pkg.train"]
    else:  # loky runs the job under a __main__ of its own, but with the user's argv
        spec, expected = (
            ModuleSpec("loky.popen_loky_posix", None, origin="/loky/popen_loky_posix.py"),
            [str(script)],
        )
    monkeypatch.setattr(__main__, "__spec__", spec, raising=False)
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "model.lr=0.1,0.2"])
    assert entry_command() == [sys.executable, *expected]


def test_when_one_rank_fails_the_others_are_stopped_and_the_error_names_it(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match=r"DDP rank 1 .* exited with code 3.*train_ddp_process_1.log"):
        wait_for_ranks([sleeper, failing], tmp_path, poll_s=0.05)
    assert sleeper.poll() is not None  # killed, not left waiting for its peer


def test_the_optuna_search_space_parses_into_optuna_distributions(tiny_cfg):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import CategoricalDistribution, LogUniformDistribution

    cfg = tiny_cfg("hparams_search=optuna")
    assert cfg.optimized_metric == "val/loss_best" and cfg.hydra.sweeper.direction == "minimize"
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    space, fixed = create_params_from_overrides(params)
    assert not fixed
    assert isinstance(space["model.lr"], LogUniformDistribution)
    assert isinstance(space["readout"], CategoricalDistribution)
    assert set(space) == {"model.lr", "encoder.hidden_size", "encoder.num_layers", "readout"}
    # every sampled value must compose: an option that does not exist would fail every trial using it
    for choice in space["readout"].choices:
        tiny_cfg("hparams_search=optuna", f"readout={choice}")


def test_the_slurm_launcher_starts_one_task_per_device_and_asks_for_gpus_only_on_gpus(tiny_cfg):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    gpus = ("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2")
    launcher = tiny_cfg(*gpus, "trainer.accelerator=gpu").hydra.launcher
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.additional_parameters.signal == "USR1@120"  # the signal seqae's preemption answers
    # a CPU partition rejects --gpus-per-node, so a CPU job asks for none
    launcher = tiny_cfg("hydra/launcher=slurm", "trainer=ddp_cpu").hydra.launcher
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (2, None, 1)

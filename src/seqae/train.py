"""The training task: compose -> instantiate -> fit -> test the best checkpoint -> metrics.json.

``train.py`` at the repository root is the Hydra entry point; it calls ``train(cfg)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from seqae.errors import ConfigError, MissingMetricError, RunFolderError, instantiate
from seqae.runs.console import tidy_console
from seqae.runs.distributed import check_precision, ddp_job_in_multirun, run_ddp_job
from seqae.runs.folder import RunFolder, claim_run_folder, release_run_folder, write_json_atomically
from seqae.runs.resume import restarted_by_slurm
from seqae.training.budget import batches_per_pass, plan_budget
from seqae.training.checkpoints import check_matches, read_checkpoint
from seqae.training.preemption import Preempted

log = logging.getLogger(__name__)

# Metric columns of TensorBoard's HPARAMS tab; they fill in as the run logs these tags.
HPARAM_METRICS = ("hp/val_loss_best", "test/loss", "test/mse", "test/mae")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and test one model; returns the flat metrics that also land in ``metrics.json``."""
    started = time.monotonic()
    tidy_console()
    output_dir = Path(cfg.paths.output_dir)
    run = RunFolder(output_dir)
    if cfg.get("skip_finished") and run.metrics.is_file():
        log.info("Skipping %s: it already holds metrics.json (skip_finished=true).", output_dir)
        return json.loads(run.metrics.read_text())
    ckpt_path = cfg.get("ckpt_path")
    last = run.last_checkpoint
    if ckpt_path is None and last.is_file() and (cfg.get("skip_finished") or restarted_by_slurm()):
        ckpt_path = str(last)  # a killed job of a sweep, or a requeued SLURM job, continues
        why = "skip_finished=true" if cfg.get("skip_finished") else "SLURM started this job again"
        log.info("Continuing %s from %s (%s).", output_dir, ckpt_path, why)
    if note := claim_run_folder(output_dir):  # one writer: a second process stops here (seqae/runs/folder.py)
        log.warning(note)
    try:  # a run that ends, even in an error, gives its folder back; a killed one leaves its lock file
        return fit_and_test(cfg, output_dir, ckpt_path, started)
    finally:
        release_run_folder(output_dir)
        end_process_group()


def end_process_group() -> None:
    """Destroy the DDP process group that Lightning leaves behind. A process that exits with a gloo
    group alive can abort in the interpreter's shutdown ("terminate called without an active
    exception", SIGABRT) after a run that succeeded, which fails its sweep or SLURM job."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def fit_and_test(cfg: DictConfig, output_dir: Path, ckpt_path: str | None, started: float) -> dict[str, Any]:
    refuse_to_overwrite(output_dir, ckpt_path)
    check_devices(cfg.trainer)
    if processes := ddp_job_in_multirun(
        cfg
    ):  # see seqae/runs/distributed.py: the ranks run this job, not the sweep
        return run_ddp_job(processes)
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
        # Lightning's DDP launchers reset torch's threads to cores / local processes unless it is set
        os.environ["OMP_NUM_THREADS"] = str(cfg.threads)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")  # the model's input size and normalisation come from the data
    model = build_model(cfg, datamodule.num_features, datamodule.sequence_length)
    model.set_normalization(*datamodule.normalization())
    if ckpt_path is not None:  # fail now, naming the file and the mismatch, not inside Lightning
        check_matches(ckpt_path, read_checkpoint(ckpt_path), model)

    callbacks, loggers = instantiate_each(cfg.get("callbacks")), instantiate_each(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    check_precision(trainer, cfg.trainer.get("precision"))
    if not len(datamodule.splits["val"]):  # data.val_fraction=0: nothing to validate on
        trainer.limit_val_batches = 0
        log.info(
            "No validation split (data.val_fraction=0): the weights at the end of training are the "
            "run's, saved as checkpoints/last.ckpt."
        )
    # without validation (that, or trainer.limit_val_batches=0): no best checkpoint, no early stopping
    validates = trainer.limit_val_batches != 0
    train_sequences = len(datamodule.splits["train"])
    budget, warning = plan_budget(trainer, train_sequences, datamodule.batch_size)
    if trainer.is_global_zero:
        log.info(budget)
        if warning:
            log.warning(warning)
    log_hyperparameters(trainer, cfg)

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:  # outside a training step (seqae/training/preemption.py handles those)
        raise Preempted(
            f"Stopped on SIGTERM. Continue it from its last checkpoint with `python train.py resume={output_dir}`."
        ) from None
    if not validates:  # the checkpoint callbacks save at validations; this run had none
        trainer.save_checkpoint(RunFolder(output_dir).last_checkpoint)
    metrics = scalar_metrics(trainer.callback_metrics)
    if "val/loss_best" not in metrics and torch.isfinite(model.val_loss_best.min_value):
        # resumed from a run whose last epoch had already ended: nothing was validated this time
        metrics["val/loss_best"] = float(model.val_loss_best.min_value)
    if cfg.get("test"):
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if not best and validates:
            log.warning("No best checkpoint was saved; testing the weights at the end of training.")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics.update(scalar_metrics(trainer.callback_metrics))
    if cfg.get("evaluate_after_train"):  # downstream metrics of the best checkpoint (conf/eval/)
        from seqae.evaluation.probes import evaluate_run

        metrics.update(evaluate_run(trainer, model, datamodule, cfg.eval, output_dir))

    metrics = {
        k: v for k, v in sorted(metrics.items()) if k.split("/")[0] in ("train", "val", "test", "eval")
    }
    seconds = round(time.monotonic() - started, 1)  # this process's: a resumed run counts its own part
    per_pass = batches_per_pass(trainer, train_sequences, datamodule.batch_size)
    epochs = round(trainer.global_step / per_pass, 2)  # passes over the training data
    metrics.update(epochs=epochs, steps=trainer.global_step, seconds=seconds, **config_choices())
    if trainer.is_global_zero:
        write_json_atomically(RunFolder(output_dir).metrics, metrics)
        log.info(run_summary(output_dir, metrics))
    return metrics


def build_model(cfg: DictConfig, input_size: int, sequence_length: int | None = None) -> Any:
    """``cfg.model`` (a ``SequenceAutoencoder``) with the encoder, decoder and objective the config
    chose, for data of ``input_size`` values per step and series of at most ``sequence_length``."""
    return instantiate(
        cfg.model,
        _recursive_=False,  # the modules' specs reach the model as plain dicts (seqae/models/targets.py)
        input_size=input_size,
        sequence_length=sequence_length,
        **module_specs(cfg),
    )


def module_specs(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """The ``encoder``, ``decoder`` and ``objective`` the config groups chose, each a ``_target_`` and
    its keyword arguments as plain values: seqae's own (``seqae/conf/encoder/``, ...) or a
    researcher's (their ``<conf>/encoder/<name>.yaml``, found through ``hydra.searchpath``)."""
    return {
        key: OmegaConf.to_container(cfg[key], resolve=True)
        for key in ("encoder", "decoder", "objective")
        if isinstance(cfg.get(key), DictConfig)
    }


def run_summary(output_dir: Path, metrics: dict[str, Any]) -> str:
    """What a finished run tells its user: where it is, its test and eval metrics, how to look at it."""
    shown = {
        k: metrics[k]
        for k in sorted(metrics, key=lambda k: (k[:5] != "test/", k))
        if k[:5] in ("test/", "eval/")
    }
    width = max((len(k) for k in shown), default=0)
    rows = [f"  {k:<{width}}  {v:.4f}" for k, v in shown.items()]
    return "\n".join(
        [f"Run folder: {output_dir}", *rows, f"See it in TensorBoard: tensorboard --logdir {output_dir}"]
    )


def instantiate_each(group: DictConfig | None) -> list[Any]:
    """Instantiate every named entry of a group such as ``callbacks`` or ``logger``."""
    return [instantiate(c) for c in (group or {}).values() if isinstance(c, DictConfig) and "_target_" in c]


def optimized_metric(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The value a sweeper minimises (``optimized_metric`` in the config); None if unset, or if a
    single run did not log it (nothing reads it there). A sweep's job without it fails, naming it."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        if HydraConfig.initialized() and HydraConfig.get().mode != RunMode.MULTIRUN:
            return None  # only a sweeper reads it; a single run without it (no validation) is fine
        raise MissingMetricError(
            f"optimized_metric={name!r} was not logged by this run; logged metrics: {sorted(metrics)}. "
            f"(A run without validation, data.val_fraction=0, logs no val/ metrics.)"
        )
    return metrics[name]


def refuse_to_overwrite(output_dir: Path, ckpt_path: str | None) -> None:
    """An earlier run's results are never overwritten by a fresh run pointed at its folder."""
    earlier = RunFolder(output_dir).earlier_results()
    if earlier and ckpt_path is None:
        raise RunFolderError(
            f"The run folder {output_dir} already holds an earlier run ({', '.join(p.name for p in earlier)}). "
            f"Refusing to overwrite it: drop the hydra.run.dir override to start a fresh run folder, "
            f"or pass ckpt_path=<checkpoint> to continue that run."
        )


def check_devices(trainer_cfg: DictConfig) -> None:
    """More CPU processes than cores is a typo, not a plan: Lightning would start them all."""
    devices, accelerator = trainer_cfg.get("devices"), trainer_cfg.get("accelerator")
    cores = os.cpu_count() or 1
    cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if cpu and isinstance(devices, int) and devices > cores:
        raise ConfigError(
            f"trainer.devices={devices} asks for {devices} CPU processes, but this machine has {cores} cores. "
            f"Use trainer.devices<={cores} (e.g. trainer=ddp_cpu for 2 processes)."
        )


def log_hyperparameters(trainer: L.Trainer, cfg: DictConfig) -> None:
    """One hparams summary per run (``hparams_summary``), with real metric columns."""
    params = hparams_summary(cfg)
    for logger in trainer.loggers:
        logger.log_hyperparams(params)  # TensorBoard's writes hparams.yaml only (default_hp_metric: false)
        if isinstance(logger, TensorBoardLogger):
            write_hparams_summary(logger, params, hparam_metrics(cfg), overridden_hparams())


@rank_zero_only  # as Lightning's log_hyperparams: the other ranks' loggers write nothing
def write_hparams_summary(
    logger: TensorBoardLogger, params: dict[str, Any], metrics: tuple[str, ...], changed: set[str]
) -> None:
    """What ``TensorBoardLogger.log_hyperparams(params, metrics)`` writes, with the hparams in
    ``changed`` marked as differing. TensorBoard's HPARAMS tab lists those first and shows the first
    five: the settings a run or sweep changed, not the alphabetical five (choices/callbacks, ...)."""
    from tensorboard.plugins.hparams import plugin_data_pb2
    from torch.utils.tensorboard.summary import hparams

    def flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, dict):
                out |= flat(value, f"{prefix}{key}/")
            else:
                out[f"{prefix}{key}"] = value if isinstance(value, bool | int | float | str) else str(value)
        return out

    placeholders = dict.fromkeys(metrics, math.nan)  # real values arrive as the run logs them
    experiment, start, end = hparams(flat(params), placeholders)
    content = experiment.value[0].metadata.plugin_data
    data = plugin_data_pb2.HParamsPluginData.FromString(content.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in changed
    content.content = data.SerializeToString()
    logger.log_metrics(placeholders)
    for summary in (experiment, start, end):
        logger.experiment.file_writer.add_summary(summary)


def overridden_hparams() -> set[str]:
    """The hparams columns this run's command line set: ``encoder=stacked`` is choices/encoder,
    ``model.lr=1e-3`` model/lr."""
    if not HydraConfig.initialized():
        return set()
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = config_choices()
    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    keys = [o.key_or_group for o in overrides]
    return {f"choices/{key}" if key in choices else key.replace(".", "/") for key in keys}


# data.* keys that say where the data is, not what it is: runs on copies of a set compare equal
PATH_KEYS = ("root", "path", "labels_path")
# the Trainer settings a researcher compares runs by: where and how precisely, and the budget
TRAINER_KEYS = (
    "accelerator",
    "devices",
    "num_nodes",
    "precision",
    "max_steps",
    "max_epochs",
    "val_check_interval",
)


def hparams_summary(cfg: DictConfig) -> dict[str, Any]:
    """What a researcher compares runs by: the chosen config groups, ``model.*``, the encoder's,
    decoder's and objective's settings, ``data.*`` (not its paths), ``seed`` and the Trainer's devices,
    precision and budget. Not ``_target_``s, callbacks, paths or Hydra's own config."""
    resolved = OmegaConf.to_container(cfg, resolve=True)

    def settings(section: str, keep: Any = lambda key: True) -> dict[str, Any]:
        values = resolved.get(section) or {}
        return {k: v for k, v in values.items() if not k.startswith("_") and keep(k)}

    return {
        "choices": config_choices(),
        "model": settings("model"),
        **{module: settings(module) for module in ("encoder", "decoder", "objective")},
        "data": settings("data", lambda key: key not in PATH_KEYS),
        "seed": resolved.get("seed"),
        "trainer": settings("trainer", lambda key: key in TRAINER_KEYS),
    }


def hparam_metrics(cfg: DictConfig) -> tuple[str, ...]:
    """The HPARAMS tab's metric columns: the eval metrics too when the run evaluates its codes."""
    if not cfg.get("evaluate_after_train"):
        return HPARAM_METRICS
    from seqae.evaluation.summary import EVAL_METRICS

    has_auroc = cfg.get("eval") and cfg.eval.get("anomaly_label") is not None
    return HPARAM_METRICS + tuple(m for m in EVAL_METRICS if m != "eval/auroc" or has_auroc)


def config_choices() -> dict[str, str]:
    """Which option of each config group this run used, e.g. {"encoder": "stacked"}."""
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    skip = ("hydra", "paths")
    return {k: str(v) for k, v in choices.items() if k.split("/")[0] not in skip and v is not None}


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, torch.Tensor) and v.numel() == 1}


def compose_config(overrides: list[str], output_dir: str | Path | None = None) -> DictConfig:
    """The config ``seqae-train <overrides>`` sees, Hydra's own section included, composed from the
    package's ``seqae/conf``: the one composition path of the notebook door, the tests and the
    benchmark. With ``output_dir``, HydraConfig is set as in a real run there, for calling
    ``train(cfg)`` in this process."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="seqae.conf", version_base="1.3", job_name="train"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
    return cfg

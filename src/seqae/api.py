"""The notebook door: ``seqae.fit``, ``seqae.load`` and a scikit-learn transformer, over the CLI's task.

``fit(x, overrides=["encoder=stacked"])`` composes the same config ``python train.py encoder=stacked``
composes (the package's ``seqae/conf/``), with ``data=arrays`` reading ``x`` from a ``data.npz`` written into the run
folder, and runs it as a Hydra job (``hydra.core.utils.run_job``, as the CLI does): the same
``seqae.train.train``, the same run folder, ``.hydra/``, ``train.log``, TensorBoard events and
``metrics.json``. It works from any working directory; runs land in ``outputs/train/runs/`` under
it unless ``output_dir`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from seqae.errors import ConfigError, MissingFileError
from seqae.runs.folder import RunFolder

# verbose=0: the console shows warnings only (train.log still gets everything), and no progress bar
QUIET = ["++hydra.job_logging.handlers.console.level=WARNING", "++callbacks.progress_bar.refresh_rate=0"]


@dataclass
class Run:
    """A finished run: its folder, its metrics, its config, its best model and the codes it gives."""

    dir: Path
    ckpt: Path | None = None  # the checkpoint to load; None: the run's best (or last)
    metrics: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def config(self) -> Any:
        """The run's composed config (``.hydra/config.yaml``)."""
        from omegaconf import OmegaConf

        return OmegaConf.load(RunFolder(self.dir).config)

    @cached_property
    def model(self) -> Any:
        """The ``SequenceAutoencoder`` of the run's best checkpoint, in eval mode, on the CPU."""
        from seqae.training.module import SequenceAutoencoder

        run = RunFolder(self.dir)
        ckpt = self.ckpt or next((p for p in (run.best_checkpoint, run.last_checkpoint) if p.is_file()), None)
        if ckpt is None:
            raise MissingFileError(
                f"{self.dir} holds no checkpoints/best.ckpt or last.ckpt to load a model from."
            )
        return SequenceAutoencoder.load(ckpt, map_location="cpu").eval()

    def encode(self, x: Any, lengths: Any = None, batch_size: int = 256) -> np.ndarray:
        """Codes ``[N, code_size]`` of ``x`` ``[N, T, F]`` (or ``[N, T]``) in the data's own units.

        Shorter series are NaN-padded at the end (or given by ``lengths``); a NaN inside a series is
        filled by linear interpolation, as training data is (``data.missing``)."""
        import torch

        from seqae.data.arrays import prepare
        from seqae.data.datamodule import SequenceData
        from seqae.evaluation.codes import encode_data

        values, lengths = prepare(as_sequences(x), lengths)
        data = SequenceData(
            torch.as_tensor(values, dtype=torch.float32),
            None if lengths is None else torch.as_tensor(lengths, dtype=torch.long),
        )
        return encode_data(self.model, data, batch_size)


def fit(
    x: Any,
    lengths: Any = None,
    labels: Any = None,
    *,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    verbose: int = 1,
) -> Run:
    """Train on ``x`` as ``python train.py <overrides>`` would, and return the run.

    ``x``: an array or tensor ``[N, T, F]`` (or ``[N, T]``), NaN-padded at the end for shorter
    series, or the path of a file ``data=arrays`` reads. ``lengths`` ``[N]``: valid steps per
    sequence. ``labels`` ``[N]``: classes for the probes only (the model never sees them); with
    them the run also evaluates its codes (``evaluate_after_train=true``). ``overrides``: exactly
    the CLI's, e.g. ``("encoder=stacked", "encoder.hidden_size=128")``. ``verbose=0``: nothing on the
    console but warnings (no progress bar, budget or summary); the run's ``train.log`` is as full.
    """
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    run_dir = Path(output_dir or Path("outputs") / "train" / "runs" / stamp).expanduser().absolute()
    data = _data_overrides(x, lengths, labels, run_dir)
    evaluate = ["evaluate_after_train=true"] if labels is not None else []
    quiet = [] if verbose else QUIET
    job = [*data, *evaluate, *quiet, *overrides, f"hydra.run.dir={run_dir}", "hydra.job.name=train"]
    metrics = run_training_job(job)
    return Run(run_dir, metrics=metrics)


def load(run_or_ckpt: str | Path) -> Run:
    """A run from its folder, or from one of its checkpoints (``<run>/checkpoints/<name>.ckpt``)."""
    path = Path(run_or_ckpt).expanduser().absolute()
    ckpt = path if path.suffix == ".ckpt" else None
    run = RunFolder.of(path)
    if not path.exists():
        raise MissingFileError(f"{run_or_ckpt}: no such run folder or checkpoint.")
    if ckpt is None and not run.config.parent.is_dir():
        raise MissingFileError(
            f"{run_or_ckpt} is not a seqae run folder (no .hydra/); expected outputs/train/runs/<time>."
        )
    metrics: dict[str, Any] = {}
    for file in (run.metrics, run.evaluation):
        if file.is_file():
            import json

            metrics.update(json.loads(file.read_text()))
    return Run(run.path, ckpt=ckpt, metrics=metrics)


class SequenceEncoder(TransformerMixin, BaseEstimator):
    """A scikit-learn transformer: ``fit`` trains a seqae autoencoder on ``X [N, T, F]``
    (``seqae.fit``), ``transform`` gives its codes ``[N, code_size]``.

    ``Pipeline([("codes", SequenceEncoder(["encoder.hidden_size=32"])), ("clf", LogisticRegression())])``
    and ``GridSearchCV`` over ``codes__overrides`` work as with any transformer.

    ``overrides``: the CLI's (``seqae-train`` overrides). ``output_dir``: a folder for the runs, one
    per fit (default: ``outputs/train/runs/`` under the working directory). ``verbose``: 0 (the
    default, as scikit-learn's estimators) prints nothing but warnings; 1 shows the progress bar,
    the budget and the run's summary.
    """

    def __init__(
        self, overrides: Sequence[str] = (), output_dir: str | None = None, verbose: int = 0
    ) -> None:
        self.overrides = overrides
        self.output_dir = output_dir
        self.verbose = verbose

    def fit(self, X: Any, y: Any = None) -> SequenceEncoder:
        """Train an autoencoder on ``X`` ``[N, T, F]`` (or ``[N, T]``; NaN-padded for shorter series).
        ``y`` is ignored: the autoencoder never sees labels."""
        x = as_sequences(X)
        output_dir = None
        if self.output_dir is not None:  # one folder per fit, so refits never meet an earlier run
            output_dir = Path(self.output_dir) / datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
        self.run_ = fit(x, overrides=tuple(self.overrides), output_dir=output_dir, verbose=self.verbose)
        self.n_features_in_ = x.shape[-1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        """The codes ``[N, code_size]`` of ``X`` (in its own units, as ``fit`` took it)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "run_")
        return self.run_.encode(X)


def as_sequences(x: Any) -> np.ndarray:
    """``[N, T, F]`` float32 from an array, tensor or nested list; ``[N, T]`` gains F = 1."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3:
        raise ConfigError(f"x has shape {x.shape}; expected [N, T, F] (or [N, T] for one feature).")
    return x


def _data_overrides(x: Any, lengths: Any, labels: Any, run_dir: Path) -> list[str]:
    """``data=arrays`` on ``x``: a file as it is, or the arrays written to ``<run>/data.npz``."""
    if isinstance(x, str | Path):
        if lengths is not None or labels is not None:
            raise ConfigError("With x a file, give its lengths and labels in the file (or data.labels_path).")
        return ["data=arrays", f"data.path={Path(x).expanduser().absolute()}"]
    arrays = {"x": as_sequences(x)}
    if lengths is not None:
        arrays["lengths"] = np.asarray(lengths, dtype=np.int64)
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    if RunFolder(run_dir).earlier_results():
        return []  # train() refuses to overwrite it, naming the folder
    run_dir.mkdir(parents=True, exist_ok=True)
    np.savez(run_dir / "data.npz", **arrays)
    return ["data=arrays", f"data.path={run_dir / 'data.npz'}"]


def run_training_job(overrides: list[str]) -> dict[str, Any]:
    """``seqae-train <overrides>`` in this process: the same composed config, run by Hydra's own
    ``run_job`` as the CLI runs it (run folder, .hydra/, train.log)."""
    from hydra.core.utils import run_job
    from hydra.types import HydraContext

    from seqae.train import compose_config, train

    result = run_job(
        task_function=train,
        config=compose_config(overrides),
        job_dir_key="hydra.run.dir",
        job_subdir_key=None,
        hydra_context=HydraContext(config_loader=None, callbacks=_NoJobCallbacks()),
    )
    return result.return_value  # raises the job's exception, if it failed


class _NoJobCallbacks:
    """The job hooks of Hydra's callbacks: seqae's (conf/hydra/default.yaml) act on multiruns only."""

    def on_job_start(self, **kwargs: Any) -> None:
        pass

    def on_job_end(self, **kwargs: Any) -> None:
        pass

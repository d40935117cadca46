"""What the codes are worth downstream: reconstruction error, a linear probe, 1-NN, anomaly AUROC.

Reconstruction is scored in the model's normalised units, like ``test/mse``. The probe and the
1-NN classifier fit on the codes of one split (``train``) and are scored on another (``test``);
both see the codes standardised with the training codes' statistics. scikit-learn is imported
only when a probe runs.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqae.data.datamodule import SequenceDataModule
from seqae.encoders import steps_mask
from seqae.encoding import encode_split
from seqae.model import SequenceAutoencoder

log = logging.getLogger(__name__)

# The metrics evaluate() can return; train.py shows them as HPARAMS columns.
EVAL_METRICS = ("eval/mse", "eval/mae", "eval/probe_accuracy", "eval/knn_accuracy", "eval/auroc")


def evaluate(
    model: SequenceAutoencoder,
    datamodule: SequenceDataModule,
    train_split: str = "train",
    test_split: str = "test",
    probe_max_iter: int = 1000,
    anomaly_label: str | int | None = None,
) -> dict[str, float]:
    """All downstream metrics that the data allows, as a flat ``{"eval/...": value}`` dict."""
    for key, split in (("train_split", train_split), ("test_split", test_split)):
        if len(datamodule.split_data(split)) == 0:
            raise ValueError(
                f"eval.{key}={split!r} holds no sequences (is data.{split}_fraction 0?); "
                f"evaluation needs sequences to score."
            )
    errors, mse, mae = reconstruction_errors(model, datamodule, test_split)
    results = {"eval/mse": mse, "eval/mae": mae}
    test_codes, test_labels = encode_split(model, datamodule, test_split)
    if test_labels is not None:
        train_codes, train_labels = encode_split(model, datamodule, train_split)
        results.update(probe_accuracies(train_codes, train_labels, test_codes, test_labels, probe_max_iter))
    else:
        log.info("The data has no labels: no linear probe or 1-NN accuracy.")
    if anomaly_label is not None:
        if test_labels is None:
            raise ValueError(
                f"eval.anomaly_label={anomaly_label!r} names an anomalous class, but the data has no labels."
            )
        anomalous = test_labels == label_id(anomaly_label, datamodule)
        results["eval/auroc"] = anomaly_auroc(errors, anomalous)
    return results


def reconstruction_errors(
    model: SequenceAutoencoder, datamodule: SequenceDataModule, split: str = "test"
) -> tuple[np.ndarray, float, float]:
    """Per-sequence MSE ``[N]`` over each sequence's valid steps, and the split's overall MSE and MAE.

    The reconstruction is the model's own (``model(x)``: free-running, original order), compared
    in normalised units, so the overall MSE is the ``test/mse`` the Trainer logs.
    """
    n = len(datamodule.split_data(split))
    per_sequence = np.empty(n, np.float64)
    sq_sum = abs_sum = count = 0.0
    was_training, start = model.training, 0
    model.eval()
    with torch.inference_mode():
        for batch in datamodule.split_loader(split):
            x = batch["x"].to(model.device)
            lengths = batch.get("lengths")
            lengths = None if lengths is None else lengths.to(model.device)
            diff = (model(x, lengths).float() - x) / model.norm_scale
            mask = (
                torch.ones_like(diff[..., 0]) if lengths is None else steps_mask(lengths, x.shape[1]).float()
            )
            mask = mask.unsqueeze(-1)
            sq = ((diff**2) * mask).sum((1, 2)).double()
            steps = mask.sum((1, 2)).double() * x.shape[-1]
            per_sequence[start : start + len(x)] = (sq / steps).cpu().numpy()
            sq_sum += float(sq.sum())
            abs_sum += float((diff.abs() * mask).sum())
            count += float(steps.sum())
            start += len(x)
    model.train(was_training)
    return per_sequence, sq_sum / count, abs_sum / count


def probe_accuracies(
    train_codes: np.ndarray,
    train_labels: np.ndarray,
    test_codes: np.ndarray,
    test_labels: np.ndarray,
    max_iter: int = 1000,
) -> dict[str, float]:
    """Linear-probe (logistic regression) and 1-NN accuracy of codes fit on train, scored on test."""
    if len(np.unique(train_labels)) < 2:
        log.warning(
            "The %d training codes hold a single class: no probe or 1-NN accuracy.", len(train_labels)
        )
        return {}
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_codes)
    train_z, test_z = scaler.transform(train_codes), scaler.transform(test_codes)
    probe = LogisticRegression(max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(train_z, train_labels)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("The linear probe did not converge in eval.probe_max_iter=%d iterations.", max_iter)
    knn = KNeighborsClassifier(n_neighbors=1).fit(train_z, train_labels)
    return {
        "eval/probe_accuracy": float(probe.score(test_z, test_labels)),
        "eval/knn_accuracy": float(knn.score(test_z, test_labels)),
    }


def anomaly_auroc(errors: np.ndarray, anomalous: np.ndarray) -> float:
    """AUROC of per-sequence reconstruction error as the anomaly score (higher = more anomalous)."""
    from torchmetrics.functional.classification import binary_auroc

    anomalous = np.asarray(anomalous, dtype=bool)
    if anomalous.all() or not anomalous.any():
        raise ValueError(
            f"AUROC needs both normal and anomalous sequences in the test split; it has "
            f"{int(anomalous.sum())} anomalous of {len(anomalous)}."
        )
    return float(binary_auroc(torch.as_tensor(errors), torch.as_tensor(anomalous, dtype=torch.long)))


def label_id(label: str | int, datamodule: SequenceDataModule) -> int:
    """The class id of ``label``: one of the data's label names, or an id."""
    names = [str(n) for n in getattr(datamodule, "label_names", None) or []]
    if str(label) in names:
        return names.index(str(label))
    if isinstance(label, int) or str(label).lstrip("-").isdigit():
        if names and not 0 <= int(label) < len(names):
            raise ValueError(
                f"eval.anomaly_label={label!r} is not a class of the data; its classes are {names}."
            )
        return int(label)
    raise ValueError(
        f"eval.anomaly_label={label!r} is not a class of the data; "
        + (f"its classes are {names}." if names else "the data has integer class ids only.")
    )


def evaluate_config(eval_cfg: Any) -> dict[str, Any]:
    """The keyword arguments of ``evaluate`` from the ``eval`` config group."""
    keys = ("train_split", "test_split", "probe_max_iter", "anomaly_label")
    return {k: eval_cfg[k] for k in keys if k in eval_cfg}


def evaluate_run(
    trainer: Any, model: SequenceAutoencoder, datamodule: SequenceDataModule, eval_cfg: Any, output_dir: Path
) -> dict[str, float]:
    """train.py's ``evaluate_after_train``: evaluate the best checkpoint (rank 0 only), write
    ``<run>/eval.json``, and log the metrics so they fill the HPARAMS tab's eval columns."""
    if not trainer.is_global_zero:
        return {}
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    device = trainer.strategy.root_device
    if best:
        model = SequenceAutoencoder.load_from_checkpoint(best, map_location=device, weights_only=True)
    else:
        log.warning("No best checkpoint was saved; evaluating the weights at the end of training.")
        model = model.to(device)
    results = evaluate(model, datamodule, **evaluate_config(eval_cfg))
    write_eval_json(output_dir / "eval.json", results, best or None)
    for logger in trainer.loggers:
        logger.log_metrics(results, step=trainer.global_step)
        logger.finalize("success")  # the Trainer already closed its writers; flush what was reopened
    return results


def write_eval_json(path: Path, results: dict[str, float], ckpt: str | Path | None, **info: Any) -> None:
    """``eval.json``: the metrics, and which checkpoint and data splits they came from."""
    from seqae.train import write_json_atomically

    write_json_atomically(path, {**results, "ckpt": None if ckpt is None else str(ckpt), **info})

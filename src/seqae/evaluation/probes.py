"""What the codes are worth downstream: reconstruction error, a linear probe, an SVM, 1-NN, anomaly AUROC.

Reconstruction is scored in the model's normalised units, like ``test/mse``. The classifiers fit on
the codes of one split (``train``; for archive data the whole official TRAIN file) and are scored
on another (``test``); the autoencoder itself never sees a label.

- ``eval/probe_accuracy``: logistic regression on the codes standardised with the training codes'
  statistics (the main figure);
- ``eval/svm_accuracy``: TS2Vec's protocol (Yue et al. 2022, ``tasks/_eval_protocols.py``), an RBF
  ``SVC`` whose C is chosen by 5-fold cross-validation, or a hard margin (``C=inf``) when the
  training split has fewer than 50 sequences or fewer than 5 per class;
- ``eval/knn_accuracy``: 1-NN (Euclidean) on the standardised codes;
- ``eval/raw_knn_accuracy``: 1-NN (Euclidean) on the input series themselves, normalised as the
  model sees them: whether the codes beat the data they came from.

scikit-learn is imported only when a classifier runs.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqae.data.datamodule import SequenceDataModule
from seqae.errors import ConfigError
from seqae.evaluation.codes import encode_split
from seqae.models.layers import steps_mask
from seqae.runs.folder import RunFolder, write_json_atomically
from seqae.training.module import SequenceAutoencoder

log = logging.getLogger(__name__)

# The C values TS2Vec's SVM protocol searches (and T-Loss's before it).
SVM_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, np.inf)
SVM_MAX_ITER = 10_000_000


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
            raise ConfigError(
                f"eval.{key}={split!r} holds no sequences (is data.{split}_fraction 0?); "
                f"evaluation needs sequences to score."
            )
    errors, mse, mae = reconstruction_errors(model, datamodule, test_split)
    results = {"eval/mse": mse, "eval/mae": mae}
    variance = split_variance(model, datamodule, test_split)
    if variance > 0:  # 1: a perfect reconstruction; 0: no better than each feature's mean
        results["eval/explained_variance"] = 1.0 - mse / variance
    test_codes, test_labels = encode_split(model, datamodule, test_split)
    if test_labels is not None:
        train_codes, train_labels = encode_split(model, datamodule, train_split)
        results.update(probe_accuracies(train_codes, train_labels, test_codes, test_labels, probe_max_iter))
        if "eval/probe_accuracy" in results:
            results["eval/svm_accuracy"] = svm_accuracy(train_codes, train_labels, test_codes, test_labels)
            results["eval/raw_knn_accuracy"] = raw_knn_accuracy(model, datamodule, train_split, test_split)
    else:
        log.info("The data has no labels: no linear probe or 1-NN accuracy.")
    if anomaly_label is not None:
        if test_labels is None:
            raise ConfigError(
                f"eval.anomaly_label={anomaly_label!r} names an anomalous class, but the data has no labels."
            )
        anomalous = test_labels == label_id(anomaly_label, datamodule)
        results["eval/auroc"] = anomaly_auroc(errors, anomalous)
    return results


def reconstruction_errors(
    model: SequenceAutoencoder, datamodule: SequenceDataModule, split: str = "test"
) -> tuple[np.ndarray, float, float]:
    """Per-sequence MSE ``[N]`` over each sequence's valid steps, and the split's overall MSE and MAE.

    The reconstruction is the model's own (free-running), compared in the units the model trains in
    (``SequenceAutoencoder.reconstruction``), so the overall MSE is the ``test/mse`` the Trainer logs.
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
            target, recon = model.reconstruction(x, lengths)
            diff = recon.float() - target.float()
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


def split_variance(model: SequenceAutoencoder, datamodule: SequenceDataModule, split: str = "test") -> float:
    """The variance of ``split``'s valid steps in the units the model trains in, per feature and then
    averaged over features: what its reconstruction MSE is measured against."""
    count, total, squares = 0, 0.0, 0.0
    for x, lengths in datamodule.split_data(split).chunks():
        with torch.inference_mode():
            x, _ = model.scale_series(model.normalize(x.to(model.device)), lengths)
        x = x.double().cpu()
        x = x[steps_mask(lengths, x.shape[1])] if lengths is not None else x.reshape(-1, x.shape[-1])
        count, total, squares = count + len(x), total + x.sum(0), squares + (x**2).sum(0)
    if count < 2:
        return 0.0
    mean = total / count
    return float((squares / count - mean**2).mean())


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


def svm_accuracy(
    train_codes: np.ndarray,
    train_labels: np.ndarray,
    test_codes: np.ndarray,
    test_labels: np.ndarray,
    max_samples: int = 10_000,
    seed: int = 0,
) -> float:
    """Test accuracy of TS2Vec's SVM protocol on the standardised codes.

    An RBF ``SVC(gamma="scale")``; C from ``SVM_C_GRID`` by 5-fold cross-validation, except with
    fewer than 50 training codes or fewer than 5 per class on average, where it is a hard margin
    (``C=inf``), as in TS2Vec. More than ``max_samples`` training codes are subsampled (stratified).
    Each fit stops after TS2Vec's ``max_iter`` of 10,000,000 solver iterations: a hard margin on
    codes that no margin separates would otherwise never end. TS2Vec feeds its codes as they are;
    here they are standardised with the training codes' statistics first, as for the probe: a code
    can mix units (with ``instance_norm`` it holds each series' level and log scale), and an SVM
    on such raw features can fail to fit at all (libsvm: non-finite dual coefficients).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, train_test_split
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    scaler = StandardScaler().fit(train_codes)
    train_codes, test_codes = scaler.transform(train_codes), scaler.transform(test_codes)
    svm = SVC(gamma="scale", max_iter=SVM_MAX_ITER)
    classes = len(np.unique(train_labels))
    with warnings.catch_warnings():  # a fit stopped at max_iter; a class with under 5 members in a fold
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        if len(train_labels) // classes < 5 or len(train_labels) < 50:
            svm.set_params(C=np.inf).fit(train_codes, train_labels)
            return float(svm.score(test_codes, test_labels))
        if len(train_labels) > max_samples:
            train_codes, _, train_labels, _ = train_test_split(
                train_codes, train_labels, train_size=max_samples, random_state=seed, stratify=train_labels
            )
        search = GridSearchCV(svm, {"C": list(SVM_C_GRID)}, cv=5).fit(train_codes, train_labels)
    return float(search.score(test_codes, test_labels))


def raw_knn_accuracy(
    model: SequenceAutoencoder,
    datamodule: SequenceDataModule,
    train_split: str = "train",
    test_split: str = "test",
) -> float:
    """1-NN (Euclidean) accuracy on the series themselves, normalised as the model normalises them.

    Variable-length series are first resampled (linear interpolation) to the longest training
    length, so that every pair has a distance.
    """
    from sklearn.neighbors import KNeighborsClassifier

    train, test = datamodule.split_data(train_split), datamodule.split_data(test_split)
    length = int(train.lengths.max()) if train.lengths is not None else train.x.shape[1]
    loc, scale = model.norm_loc.cpu().double(), model.norm_scale.cpu().double()

    def flat(data: Any) -> np.ndarray:
        rows = []
        for x, lengths in data.chunks():
            x = (x.double() - loc) / scale
            if lengths is None and x.shape[1] == length:
                rows.append(x.flatten(1))
                continue
            lengths = lengths if lengths is not None else torch.full((len(x),), x.shape[1])
            rows.extend(
                resample(s[: int(n)], length).flatten()[None] for s, n in zip(x, lengths, strict=True)
            )
        return torch.cat(rows).numpy()

    knn = KNeighborsClassifier(n_neighbors=1).fit(flat(train), train.labels.numpy())
    return float(knn.score(flat(test), test.labels.numpy()))


def resample(series: torch.Tensor, length: int) -> torch.Tensor:
    """A series ``[T, F]`` linearly interpolated to ``[length, F]``."""
    if len(series) == length:
        return series
    if len(series) == 1:
        return series.expand(length, -1)
    return torch.nn.functional.interpolate(series.T[None], size=length, mode="linear", align_corners=True)[
        0
    ].T


def anomaly_auroc(errors: np.ndarray, anomalous: np.ndarray) -> float:
    """AUROC of per-sequence reconstruction error as the anomaly score (higher = more anomalous)."""
    from torchmetrics.functional.classification import binary_auroc

    anomalous = np.asarray(anomalous, dtype=bool)
    if anomalous.all() or not anomalous.any():
        raise ConfigError(
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
            raise ConfigError(
                f"eval.anomaly_label={label!r} is not a class of the data; its classes are {names}."
            )
        return int(label)
    raise ConfigError(
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
        model = SequenceAutoencoder.load(best, map_location=device)
    else:
        if trainer.limit_val_batches != 0:  # a run without validation (data.val_fraction=0) has none
            log.warning("No best checkpoint was saved; evaluating the weights at the end of training.")
        model = model.to(device)
    results = evaluate(model, datamodule, **evaluate_config(eval_cfg))
    write_eval_json(RunFolder(output_dir).evaluation, results, best or None)
    for logger in trainer.loggers:
        logger.log_metrics(results, step=trainer.global_step)
        logger.finalize("success")  # the Trainer already closed its writers; flush what was reopened
    return results


def write_eval_json(path: Path, results: dict[str, float], ckpt: str | Path | None, **info: Any) -> None:
    """``eval.json``: the metrics, and which checkpoint and data splits they came from."""
    write_json_atomically(path, {**results, "ckpt": None if ckpt is None else str(ckpt), **info})

"""Downstream evaluation: probe and 1-NN on separable classes, reconstruction metrics, anomaly AUROC."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from seqae.data import SequenceData, SequenceDataModule, SinesDataModule
from seqae.evaluation.probes import (
    SVM_C_GRID,
    anomaly_auroc,
    evaluate,
    probe_accuracies,
    raw_knn_accuracy,
    reconstruction_errors,
    resample,
    svm_accuracy,
)
from seqae.train import train
from seqae.training.module import SequenceAutoencoder
from tests.conftest import quiet_trainer, recurrent


def fit(dm: SequenceDataModule, epochs: int, hidden_size: int = 16) -> tuple[SequenceAutoencoder, L.Trainer]:
    L.seed_everything(0, verbose=False)
    dm.setup()
    model = SequenceAutoencoder(dm.num_features, **recurrent(hidden_size), lr=0.01)
    model.set_normalization(*dm.normalization())
    trainer = quiet_trainer(None, max_epochs=epochs, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    return model, trainer


@pytest.fixture(scope="module")
def trained_on_sines():
    """Four frequency bands (chance = 0.25), a short honest training: 8 epochs of 320 sequences."""
    dm = SinesDataModule(num_sequences=512, seq_len=16, num_features=10, batch_size=32, test_fraction=0.25)
    model, trainer = fit(dm, epochs=8)
    return model, dm, trainer


def test_linear_probe_and_1nn_on_separable_classes_are_far_above_chance(trained_on_sines):
    model, dm, _ = trained_on_sines
    results = evaluate(model, dm)
    assert set(results) == {
        "eval/mse",
        "eval/mae",
        "eval/explained_variance",
        "eval/probe_accuracy",
        "eval/svm_accuracy",
        "eval/knn_accuracy",
        "eval/raw_knn_accuracy",
    }
    assert results["eval/probe_accuracy"] > 0.8  # chance: 0.25
    assert results["eval/knn_accuracy"] > 0.7 and results["eval/svm_accuracy"] > 0.7
    assert results["eval/raw_knn_accuracy"] > 0.7  # the frequency bands are plain in the raw series too


def test_the_probe_learns_nothing_from_shuffled_labels(trained_on_sines):
    """The probe is fit on train codes only: with their labels shuffled, test accuracy falls to chance."""
    from seqae.evaluation.codes import encode_split

    model, dm, _ = trained_on_sines
    train_codes, train_labels = encode_split(model, dm, "train")
    test_codes, test_labels = encode_split(model, dm, "test")
    shuffled = np.random.default_rng(0).permutation(train_labels)
    results = probe_accuracies(train_codes, shuffled, test_codes, test_labels)
    assert results["eval/probe_accuracy"] < 0.45 and results["eval/knn_accuracy"] < 0.45


def test_reconstruction_metrics_are_the_trainers_test_metrics(trained_on_sines):
    model, dm, trainer = trained_on_sines
    logged = trainer.test(model, datamodule=dm, verbose=False)[0]
    errors, mse, mae = reconstruction_errors(model, dm, "test")
    assert mse == pytest.approx(logged["test/mse"], rel=1e-5)
    assert mae == pytest.approx(logged["test/mae"], rel=1e-5)
    assert errors.shape == (len(dm.split_data("test")),) and errors.mean() == pytest.approx(mse, rel=1e-5)


class VariableLengthData(SequenceDataModule):
    def load(self) -> SequenceData:
        g = torch.Generator().manual_seed(0)
        lengths = torch.randint(3, 13, (48,), generator=g)
        x = torch.randn(48, 12, 2, generator=g) * (torch.arange(12) < lengths[:, None]).unsqueeze(-1)
        return SequenceData(x, lengths)


def test_reconstruction_metrics_count_valid_steps_only():
    dm = VariableLengthData(batch_size=8, val_fraction=0.25, test_fraction=0.25)
    model, trainer = fit(dm, epochs=1, hidden_size=4)
    logged = trainer.test(model, datamodule=dm, verbose=False)[0]
    results = evaluate(model, dm)
    assert set(results) == {"eval/mse", "eval/mae", "eval/explained_variance"}  # no labels: no probe
    assert results["eval/mse"] == pytest.approx(logged["test/mse"], rel=1e-5)
    test = dm.split_data("test")
    valid = (test.x - model.norm_loc) / model.norm_scale
    valid = valid[torch.arange(valid.shape[1]) < test.lengths[:, None]]  # [steps, F]: padding left out
    variance = valid.double().var(0, unbiased=False).mean().item()
    assert results["eval/explained_variance"] == pytest.approx(1 - results["eval/mse"] / variance, rel=1e-6)
    assert results["eval/mae"] == pytest.approx(logged["test/mae"], rel=1e-5)


class Anomalies(SequenceDataModule):
    """Official splits: train holds normal sines only; test mixes them with sequences five times louder."""

    def load(self) -> dict[str, SequenceData]:
        normal = SinesDataModule(num_sequences=160, seq_len=12, num_features=3, num_classes=1).load()
        self.label_names = ["normal", "anomaly"]
        test_x = normal.x[100:].clone()
        test_x[::3] *= 5
        test_labels = torch.zeros(60, dtype=torch.long)
        test_labels[::3] = 1
        return {
            "train": SequenceData(normal.x[:100], labels=torch.zeros(100, dtype=torch.long)),
            "test": SequenceData(test_x, labels=test_labels),
        }


def test_anomaly_auroc_of_reconstruction_error_by_class_name_or_id():
    dm = Anomalies(batch_size=16)
    model, _ = fit(dm, epochs=2, hidden_size=8)
    by_name = evaluate(model, dm, anomaly_label="anomaly")
    assert by_name["eval/auroc"] > 0.95  # the loud sequences reconstruct far worse
    assert "eval/probe_accuracy" not in by_name  # train holds a single class: nothing to probe
    assert evaluate(model, dm, anomaly_label=1)["eval/auroc"] == by_name["eval/auroc"]
    assert evaluate(model, dm, anomaly_label="normal")["eval/auroc"] == pytest.approx(
        1 - by_name["eval/auroc"]
    )
    with pytest.raises(
        ValueError, match=r"anomaly_label='abnormal' is not a class .*\['normal', 'anomaly'\]"
    ):
        evaluate(model, dm, anomaly_label="abnormal")


def test_anomaly_label_needs_labels_and_both_kinds_of_sequence():
    dm = VariableLengthData(batch_size=8)
    dm.setup()
    model = SequenceAutoencoder(2, **recurrent(4))
    with pytest.raises(
        ValueError, match="anomaly_label=1 names an anomalous class, but the data has no labels"
    ):
        evaluate(model, dm, anomaly_label=1)
    with pytest.raises(ValueError, match="needs both normal and anomalous sequences"):
        anomaly_auroc(np.array([0.1, 0.2, 0.3]), np.array([0, 0, 0]))
    assert anomaly_auroc(np.array([0.1, 0.9, 0.2, 0.8]), np.array([0, 1, 0, 1])) == 1.0


def test_svm_protocol_searches_c_by_cross_validation_or_takes_a_hard_margin(monkeypatch):
    """TS2Vec's rule: a 5-fold search over C, except under 50 training codes or 5 per class."""
    import sklearn.model_selection
    import sklearn.svm

    fitted = []
    real_svc = sklearn.svm.SVC

    class RecordingSVC(real_svc):
        def fit(self, x, y, sample_weight=None):
            fitted.append((self.C, len(x)))
            return super().fit(x, y, sample_weight)

    monkeypatch.setattr(sklearn.svm, "SVC", RecordingSVC)
    rng = np.random.default_rng(0)

    def blobs(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 2
        return rng.normal(size=(n, 4)) + 3.0 * labels[:, None], labels

    small, small_labels = blobs(20)
    test, test_labels = blobs(40)
    assert svm_accuracy(small, small_labels, test, test_labels) > 0.9
    assert fitted == [(np.inf, 20)]  # hard margin, no search
    fitted.clear()
    large, large_labels = blobs(60)
    assert svm_accuracy(large, large_labels, test, test_labels) > 0.9
    searched = {c for c, n in fitted if n == 48}  # 4/5 of 60 in each fold
    assert searched == set(SVM_C_GRID) and fitted[-1][1] == 60  # refit on all 60 with the best C


def test_raw_knn_resamples_variable_lengths_to_compare_every_pair():
    """Two classes of the same shape at two speeds: stretched to one length, 1-NN tells them apart."""

    class Speeds(SequenceDataModule):
        def load(self) -> dict[str, SequenceData]:
            parts = {}
            for split, n in (("train", 12), ("test", 8)):
                lengths = torch.tensor([10 + (i % 3) for i in range(n)])
                labels = torch.arange(n) % 2
                x = torch.zeros(n, 12, 1)
                for i in range(n):
                    t = torch.linspace(0, 1, int(lengths[i]))
                    x[i, : lengths[i], 0] = torch.sin((2 + 3 * labels[i]) * 3.1416 * t)
                parts[split] = SequenceData(x, lengths, labels)
            return parts

    dm = Speeds(batch_size=4, val_fraction=0.25)
    dm.setup()
    model = SequenceAutoencoder(1, **recurrent(4))
    assert raw_knn_accuracy(model, dm) == 1.0
    assert resample(torch.tensor([[0.0], [2.0]]), 3).flatten().tolist() == [0.0, 1.0, 2.0]


# -- train.py evaluate_after_train ---------------------------------------------------------------
def test_training_can_evaluate_its_best_checkpoint(tiny_cfg, tmp_path):
    metrics = train(
        tiny_cfg("evaluate_after_train=true", "eval.anomaly_label=0", "trainer.log_every_n_steps=1")
    )
    run = tmp_path / "run"
    on_disk = json.loads((run / "eval.json").read_text())
    assert on_disk["ckpt"] == str(run / "checkpoints" / "best.ckpt")
    for key in (
        "eval/mse",
        "eval/mae",
        "eval/probe_accuracy",
        "eval/svm_accuracy",
        "eval/raw_knn_accuracy",
        "eval/auroc",
    ):
        assert on_disk[key] == pytest.approx(metrics[key])
    assert (
        json.loads((run / "metrics.json").read_text())["eval/probe_accuracy"]
        == metrics["eval/probe_accuracy"]
    )
    assert metrics["eval/mse"] == pytest.approx(metrics["test/mse"], rel=1e-5)  # the same best checkpoint

    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    content = acc.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    columns = {m.name.tag for m in experiment.metric_infos}
    assert {
        "hp/val_loss_best",
        "eval/probe_accuracy",
        "eval/svm_accuracy",
        "eval/raw_knn_accuracy",
        "eval/auroc",
    } <= columns
    # by step, not file order: the placeholder (step 0) and the result can land in files of one second,
    # whose writer counters (.9, .10) sort out of order
    final = max(acc.Scalars("eval/probe_accuracy"), key=lambda event: event.step)
    assert final.value == pytest.approx(metrics["eval/probe_accuracy"])


def test_without_evaluate_after_train_there_is_no_eval(tiny_cfg, tmp_path):
    metrics = train(tiny_cfg("debug=limit"))
    assert not any(k.startswith("eval/") for k in metrics)
    assert not (tmp_path / "run" / "eval.json").exists()

"""The notebook door: seqae.fit / seqae.load / seqae.SequenceEncoder, on tiny data, from any folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

import seqae
from seqae.errors import ConfigError

TINY = (
    "encoder.hidden_size=8",
    "trainer.max_steps=8",
    "trainer.val_check_interval=4",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar.refresh_rate=0",
)


def two_classes(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rising and falling ramps with noise: [N, 12, 2] and their classes."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    ramp = np.linspace(-1, 1, 12)[None, :, None] * np.where(labels, 1.0, -1.0)[:, None, None]
    return (ramp + 0.2 * rng.normal(size=(n, 12, 2))).astype(np.float32), labels


@pytest.mark.slow
def test_fit_from_another_folder_writes_a_cli_run_and_load_gives_it_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a notebook opened outside the repository
    x, y = two_classes()
    run = seqae.fit(x, labels=y, overrides=[*TINY, "encoder=stacked"])
    assert run.dir.parent == tmp_path / "outputs" / "train" / "runs"
    names = {p.name for p in run.dir.iterdir()}
    assert {".hydra", "checkpoints", "tensorboard", "train.log", "metrics.json", "eval.json"} <= names
    assert {p.name for p in (run.dir / ".hydra").iterdir()} == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    assert list((run.dir / "tensorboard").glob("events.out.tfevents.*"))
    assert "Training budget: 8 optimizer steps" in (run.dir / "train.log").read_text()
    assert run.metrics == json.loads((run.dir / "metrics.json").read_text())
    assert run.metrics["encoder"] == "stacked" and run.config.encoder.num_layers == 2
    assert run.metrics["eval/probe_accuracy"] > 0.9  # labels given: the codes were evaluated
    codes = run.encode(x)
    assert codes.shape == (64, run.model.code_size) and codes.dtype == np.float32

    again = seqae.load(run.dir)
    np.testing.assert_allclose(again.encode(x), codes)
    from_ckpt = seqae.load(run.dir / "checkpoints" / "last.ckpt")
    assert from_ckpt.dir == run.dir and from_ckpt.encode(x[:3]).shape == (3, run.model.code_size)


@pytest.mark.slow
def test_the_transformer_works_in_a_pipeline_a_clone_and_a_grid_search(tmp_path, capfd):
    x, y = two_classes(80)
    # The default encoder's blocks start as identities, blind to order: at its own width (64) it
    # tells a rising ramp from a falling one within 40 steps (at TINY's width of 8 it does not)
    learns_order = (*TINY, "encoder.hidden_size=64", "trainer.max_steps=40", "trainer.val_check_interval=40")
    encoder = seqae.SequenceEncoder(overrides=learns_order, output_dir=str(tmp_path / "runs"))
    pipeline = Pipeline([("codes", encoder), ("clf", LogisticRegression())])
    pipeline.fit(x[:60], y[:60])
    assert pipeline.score(x[60:], y[60:]) > 0.9
    assert pipeline.named_steps["codes"].transform(x[:5]).shape[0] == 5

    copy = clone(encoder)
    assert copy.get_params() == encoder.get_params() and not hasattr(copy, "run_")
    copy.set_params(overrides=(*TINY, "encoder=gru"))
    assert copy.get_params()["overrides"][-1] == "encoder=gru"

    # As quiet as any scikit-learn estimator (verbose=0): not a line per fold, on either stream.
    # (Logging every step: the tiny folds are shorter than Lightning's default logging interval,
    # which it would warn about, as it warns a user of any run that short.)
    quiet = (*TINY, "trainer.log_every_n_steps=1")
    grid = {"codes__overrides": [quiet, (*quiet, "encoder.hidden_size=4")]}
    search = GridSearchCV(Pipeline([("codes", encoder), ("clf", LogisticRegression())]), grid, cv=2)
    capfd.readouterr()
    search.fit(x[:60], y[:60])
    out, err = capfd.readouterr()
    assert out.splitlines() == [] and err.splitlines() == []
    assert search.best_params_["codes__overrides"] in grid["codes__overrides"]
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 * 2 + 1 + 1  # folds x settings, refit, the pipeline
    assert "Training budget: 8 optimizer steps" in (runs[-1] / "train.log").read_text()  # the log is whole

    loud = seqae.SequenceEncoder(overrides=TINY, output_dir=str(tmp_path / "loud"), verbose=1).fit(x[:20])
    assert "Training budget" in capfd.readouterr().out and loud.transform(x[:2]).shape[0] == 2


def test_x_of_the_wrong_shape_is_named():
    with pytest.raises(ConfigError, match=r"x has shape \(5,\); expected \[N, T, F\]"):
        seqae.fit(np.zeros(5))
    with pytest.raises(ConfigError, match="give its lengths and labels in the file"):
        seqae.fit("series.npy", labels=[0, 1])


@pytest.mark.slow
def test_variable_length_series_with_gaps_fit_encode_and_transform_to_finite_codes(tmp_path):
    """NaN-padded shorter series and NaN gaps inside series, through every door alike."""
    x, y = two_classes(48)
    x[::3, 8:] = np.nan  # a third of the series are 8 steps long
    x[1::4, 3, 0] = np.nan  # and some have a gap inside
    run = seqae.fit(x, labels=y, overrides=TINY, output_dir=tmp_path / "run")
    assert "filled 12 missing values inside 12 sequences" in (run.dir / "train.log").read_text()
    codes = run.encode(x)
    assert np.isfinite(codes).all()
    # a padded series gives the code of its valid steps alone; a gap is the interpolated value
    np.testing.assert_allclose(codes[3], run.encode(x[3:4, :8])[0], rtol=1e-5, atol=1e-6)
    filled = x[1:2].copy()
    filled[0, 3, 0] = (filled[0, 2, 0] + filled[0, 4, 0]) / 2
    np.testing.assert_allclose(codes[1], run.encode(filled)[0], rtol=1e-5, atol=1e-6)
    transformer = seqae.SequenceEncoder(overrides=TINY, output_dir=str(tmp_path / "sk")).fit(x)
    assert np.isfinite(transformer.transform(x)).all()

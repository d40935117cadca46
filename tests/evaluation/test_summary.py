"""The sweep table, on sweep folders laid out as Hydra and train.py leave them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from seqae.evaluation.summary import SweepSummary, collect, summarize


def make_job(
    sweep: Path,
    num: int,
    overrides: list[str],
    metrics: dict | None,
    eval_metrics: dict | None = None,
    optimized_metric: str = "val/loss_best",
    direction: str | None = None,
) -> None:
    hydra_dir = sweep / str(num) / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump({"optimized_metric": optimized_metric, "seed": 42}))
    sweeper = {"_target_": "optuna", "direction": direction} if direction else {"_target_": "basic"}
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": sweeper}}))
    if metrics is not None:
        (sweep / str(num) / "metrics.json").write_text(json.dumps(metrics))
    if eval_metrics is not None:
        (sweep / str(num) / "eval.json").write_text(json.dumps({**eval_metrics, "ckpt": "x.ckpt"}))


def metrics(loss: float, **more) -> dict:
    return {
        "val/loss_best": loss,
        "val/loss": loss + 1,
        "test/mse": loss / 2,
        "epochs": 3,
        "encoder": "x",
        **more,
    }


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["trainer.max_epochs=3", "encoder=single", "readout=hidden"], metrics(0.5))
    make_job(sweep, 1, ["trainer.max_epochs=3", "encoder=single", "readout=cell"], metrics(0.2))
    make_job(sweep, 2, ["trainer.max_epochs=3", "encoder=stacked", "readout=hidden"], None)  # failed job
    make_job(
        sweep,
        10,
        ["trainer.max_epochs=3", "encoder=stacked", "readout=cell"],
        metrics(0.3),
        {"eval/probe_accuracy": 0.9},
    )
    return sweep


def test_every_job_is_a_row_with_its_overrides_and_metrics(sweep):
    rows, overrides, metric_columns = collect(sweep)
    assert [r["job"] for r in rows] == ["0", "1", "2", "10"]  # by job number, not as text
    assert overrides == ["trainer.max_epochs", "encoder", "readout"]
    assert metric_columns == ["val/loss_best", "test/mse", "eval/probe_accuracy", "epochs"]  # not val/loss
    assert rows[3]["eval/probe_accuracy"] == 0.9 and rows[3]["readout"] == "cell"
    assert rows[2]["status"] == "no metrics.json" and "val/loss_best" not in rows[2]


def test_the_table_is_sorted_best_first_and_written_as_csv(sweep):
    table = summarize(sweep)
    lines = table.splitlines()
    assert lines[0].startswith("Sorted by val/loss_best (lower is better); 4 jobs.")
    assert "Same in every job: trainer.max_epochs=3" in lines[1]
    body = [line for line in lines if line.startswith("| ") and not line.startswith("| job")]
    assert [line.split(" | ")[0] for line in body] == ["| 1", "| 10", "| 0", "| 2"]  # the failed job last
    assert "no metrics.json" in body[-1]
    assert (sweep / "summary.md").read_text() == table

    with (sweep / "summary.csv").open() as f:
        written = list(csv.DictReader(f))
    assert [r["job"] for r in written] == ["1", "10", "0", "2"]
    assert written[0]["trainer.max_epochs"] == "3"  # the CSV keeps every column
    assert float(written[1]["eval/probe_accuracy"]) == 0.9 and written[0]["eval/probe_accuracy"] == ""


def test_a_maximising_sweeper_sorts_highest_first(tmp_path):
    sweep = tmp_path / "sweep"
    for num, accuracy in enumerate([0.7, 0.9, 0.8]):
        make_job(
            sweep,
            num,
            [f"model.lr={num}"],
            metrics(1.0, **{"eval/probe_accuracy": accuracy}),
            optimized_metric="eval/probe_accuracy",
            direction="maximize",
        )
    rows = [line for line in summarize(sweep, write=False).splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 2", "| 0"]
    assert not (sweep / "summary.csv").exists()
    rows = [line for line in summarize(sweep, "val/loss_best", False).splitlines() if line.startswith("| ")][
        1:
    ]
    assert len(rows) == 3


def test_a_folder_that_is_not_a_sweep_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such sweep folder"):
        summarize(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no job folders"):
        summarize(tmp_path)


def test_the_hydra_callback_prints_the_table_at_the_end_of_a_multirun(sweep, capsys):
    from omegaconf import OmegaConf

    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    out = capsys.readouterr().out
    assert "| job | encoder | readout |" in out and str(sweep / "summary.csv") in out
    assert (sweep / "summary.csv").is_file()


def test_the_hydra_callback_never_fails_a_finished_sweep(tmp_path, caplog):
    from omegaconf import OmegaConf

    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "gone")}}}))
    assert "No sweep summary" in caplog.text

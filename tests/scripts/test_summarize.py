"""`python scripts/summarize.py <sweep>` in a fresh process, as a user types it."""

from __future__ import annotations

from tests.conftest import run_cli
from tests.evaluation.test_summary import make_job, metrics


def test_summarize_prints_the_table_and_writes_csv(tmp_path):
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["encoder=single"], metrics(0.4))
    make_job(sweep, 1, ["encoder=stacked"], metrics(0.1))
    proc = run_cli(str(sweep), script="scripts/summarize.py")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| job | encoder | val/loss_best") and rows[1].startswith("| 1 | stacked")
    assert f"{sweep}/summary.csv" in proc.stdout and (sweep / "summary.csv").is_file()


def test_summarize_names_a_folder_that_is_not_a_sweep(tmp_path):
    proc = run_cli(str(tmp_path / "nope"), script="scripts/summarize.py")
    assert proc.returncode == 2
    assert "nope: no such sweep folder" in proc.stderr and "Traceback" not in proc.stderr

"""One table of a sweep: every job's overrides and metrics, best first (Markdown + CSV).

``python scripts/summarize.py <sweep folder>`` prints it; ``SweepSummary`` (registered under
``hydra.callbacks`` in conf/hydra/default.yaml) prints and writes it at the end of every multirun.
Imports no torch: the Hydra callback is loaded by every run.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from seqae.errors import MissingFileError
from seqae.runs.folder import RunFolder

log = logging.getLogger(__name__)

# Metric columns, in this order; any other test/* and eval/* metric follows them.
# The metrics seqae.evaluation.probes.evaluate() can return (kept here, where no torch is imported).
EVAL_METRICS = (
    "eval/mse",
    "eval/mae",
    "eval/explained_variance",
    "eval/probe_accuracy",
    "eval/svm_accuracy",
    "eval/knn_accuracy",
    "eval/raw_knn_accuracy",
    "eval/auroc",
)
METRIC_COLUMNS = ("val/loss_best", "test/loss", "test/mse", "test/mae", *EVAL_METRICS)


def collect(
    sweep_dir: str | Path, keep: tuple[str, ...] = ()
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Rows (one per job folder, by job number), the override columns and the metric columns:
    val/loss_best, test/*, eval/*, epochs, and the metrics named in ``keep``."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise MissingFileError(f"{sweep_dir}: no such sweep folder (expected outputs/<task>/multiruns/<id>).")
    jobs = [p for p in sweep_dir.iterdir() if RunFolder(p).overrides.is_file()]
    if not jobs:
        raise MissingFileError(
            f"{sweep_dir} holds no job folders (<job>/.hydra/overrides.yaml); "
            f"pass the folder of a multirun, e.g. outputs/train/multiruns/<id>."
        )
    jobs.sort(key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
    rows, override_keys, metric_keys = [], [], []
    for job in jobs:
        row: dict[str, Any] = {"job": job.name}
        for override in yaml.safe_load(RunFolder(job).overrides.read_text()) or []:
            key, _, value = str(override).partition("=")
            key = key.lstrip("+~")
            row[key] = value
            if key not in override_keys:
                override_keys.append(key)
        metrics = _read_json(RunFolder(job).metrics)
        metrics.update(_read_json(RunFolder(job).evaluation))  # an evaluate.py run after training
        row["status"] = "done" if metrics else "no metrics.json"
        for key, value in metrics.items():
            if _is_metric(key, value, keep):
                row[key] = value
                if key not in metric_keys:
                    metric_keys.append(key)
        rows.append(row)
    first = [k for k in METRIC_COLUMNS if k in metric_keys]
    metric_keys = first + sorted((k for k in metric_keys if k not in first), key=lambda k: (k == "epochs", k))
    return rows, override_keys, metric_keys


def sort_rows(rows: list[dict[str, Any]], metric: str, maximize: bool = False) -> list[dict[str, Any]]:
    """Best first by ``metric``; jobs without it (failed, still running) last."""

    def key(row: dict[str, Any]) -> tuple[bool, float]:
        value = row.get(metric)
        missing = value is None or math.isnan(value)
        return missing, 0.0 if missing else (-value if maximize else value)

    return sorted(rows, key=key)


def optimized_metric(sweep_dir: Path) -> tuple[str, bool]:
    """The sweep's ``optimized_metric`` and whether its sweeper maximises it (from a job's .hydra/)."""
    metric, maximize = "val/loss_best", False
    for job in sorted(sweep_dir.glob("*/.hydra")):
        config = yaml.safe_load((job / "config.yaml").read_text()) if (job / "config.yaml").is_file() else {}
        hydra = yaml.safe_load((job / "hydra.yaml").read_text()) if (job / "hydra.yaml").is_file() else {}
        metric = (config or {}).get("optimized_metric") or metric
        direction = ((hydra or {}).get("hydra", {}).get("sweeper") or {}).get("direction", "minimize")
        maximize = str(direction[0] if isinstance(direction, list) else direction).lower() == "maximize"
        break
    return metric, maximize


def summarize(
    sweep_dir: str | Path, metric: str | None = None, maximize: bool | None = None, write: bool = True
) -> str:
    """The sweep's table as Markdown; with ``write``, also ``summary.csv`` and ``summary.md`` in the sweep folder."""
    sweep_dir = Path(sweep_dir)
    default_metric, default_max = optimized_metric(sweep_dir)
    metric = metric or default_metric
    rows, override_keys, metric_keys = collect(sweep_dir, keep=(metric,))
    maximize = default_max if maximize is None else maximize
    rows = sort_rows(rows, metric, maximize)
    columns = ["job", *override_keys, *metric_keys, "status"]
    markdown = to_markdown(rows, override_keys, metric_keys, metric, maximize)
    if write:
        (sweep_dir / "summary.csv").write_text(to_csv(rows, columns))
        (sweep_dir / "summary.md").write_text(markdown)
    return markdown


def to_markdown(
    rows: list[dict[str, Any]], override_keys: list[str], metric_keys: list[str], metric: str, maximize: bool
) -> str:
    """Overrides that are the same in every job are listed once above the table."""
    varies = [k for k in override_keys if len({str(r.get(k, "")) for r in rows}) > 1]
    shared = [f"{k}={rows[0].get(k, '')}" for k in override_keys if k not in varies]
    varying = ["job", *varies, *metric_keys]
    if any(r["status"] != "done" for r in rows):
        varying.append("status")
    lines = [f"Sorted by {metric} ({'higher' if maximize else 'lower'} is better); {len(rows)} jobs."]
    if shared:
        lines.append(f"Same in every job: {', '.join(shared)}")
    lines += ["", "| " + " | ".join(varying) + " |", "|" + "---|" * len(varying)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in varying) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, print the sweep's table and write summary.csv/.md."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            table = summarize(sweep_dir)
        except Exception as e:  # a summary must never turn a finished sweep into a failed one
            log.warning("No sweep summary for %s: %s", sweep_dir, e)
            return
        print(f"\n{table}\nSweep summary: {sweep_dir / 'summary.csv'} (and summary.md)", flush=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _is_metric(key: str, value: Any, keep: tuple[str, ...]) -> bool:
    wanted = key in ("val/loss_best", "epochs", *keep) or key.split("/")[0] in ("test", "eval")
    return wanted and isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)

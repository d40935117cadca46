"""What the default codes are worth on real archive data, in one command.

    python scripts/benchmark_codes.py --fetch                       # the development sets, fetched first
    python scripts/benchmark_codes.py --root ~/UCRArchive_2018 --datasets GunPoint,Coffee --jobs 2
    python scripts/benchmark_codes.py --fetch -- model.hidden_size=128   # after --: train.py overrides

Trains every data set with the default configuration (plus any overrides after ``--``), then
evaluates its codes: one ``python train.py -m data=ucr data.name=A,B,... evaluate_after_train=true``
sweep, a job per data set in ``<out>/<Name>/``. The probes fit on each set's official TRAIN file and
score on its TEST file; the autoencoder never sees a label. ``--jobs N`` trains N sets at a time
(Hydra's joblib launcher, one thread each). Run the same command again and finished sets are kept,
a killed one continues from its last checkpoint (``skip_finished=true``).

``--fetch`` downloads the wheels of aeon 1.6.0, sktime 1.2.0 and tslearn 0.10.0 with
``pip download --no-deps`` (nothing is installed) and writes the named sets' canonical TRAIN/TEST
files under ``--root`` (seqae.data.fetch).

The table (printed, and written to ``<out>/table.md`` and ``table.csv``) has, per set: the logistic
probe (the main figure), TS2Vec's SVM protocol, 1-NN on the raw normalised series, the published
T-Loss K=10 and 1-NN DTW accuracies (benchmarks/published.csv names their source), ``test/mse``
and the explained variance of the test reconstruction (an autoencoder that does not reconstruct is
not working, whatever its probe says), and the minutes each set took. The last row is each
column's mean; the lines under the table compare the means the way the issue tracker's target does.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "benchmarks" / "published.csv"
DEVELOPMENT = (
    "UnitTest",
    "Covid3Month_disc",
    "Trace",
    "PickupGestureWiimoteZ",
    "OSULeaf",
    "ACSF1",
    "PLAID",
)
# column -> (header, the metric of the set's metrics.json / eval.json, or a published column)
COLUMNS = {
    "logistic": ("logistic", "eval/probe_accuracy"),
    "svm": ("SVM", "eval/svm_accuracy"),
    "raw_knn": ("raw 1-NN", "eval/raw_knn_accuracy"),
    "tloss_k10": ("T-Loss K=10", "published"),
    "dtw_1nn": ("1-NN DTW", "published"),
    "test_mse": ("test/mse", "test/mse"),
    "explained_variance": ("explained var.", "eval/explained_variance"),
    "minutes": ("minutes", "seconds"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="data/archives", help="the archive folder (default: data/archives)")
    parser.add_argument(
        "--datasets",
        default=",".join(DEVELOPMENT),
        help="comma-separated set names (default: the development sets)",
    )
    parser.add_argument("--out", default="outputs/benchmark_codes", help="one folder per set, and the table")
    parser.add_argument("--jobs", type=int, default=1, help="sets trained at a time (default 1)")
    parser.add_argument(
        "--fetch", action="store_true", help="download the sets into --root first (see above)"
    )
    parser.add_argument(
        "--table-only", action="store_true", help="print the table of what --out holds; train nothing"
    )
    parser.add_argument("overrides", nargs="*", help="train.py overrides, after --")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    if args.jobs < 1 or not names:
        parser.error("--jobs must be at least 1 and --datasets must name at least one set")
    root, out = Path(args.root).expanduser().resolve(), Path(args.out).expanduser().resolve()
    if args.fetch:
        from seqae.data.fetch import fetch

        fetch(names, root)
    if not args.table_only:
        command = train_command(names, root, out, args.jobs, args.overrides)
        print("$ " + " ".join(command), flush=True)
        result = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if result.returncode != 0:
            print(
                f"error: the training sweep exited with {result.returncode}; the table shows what finished.",
                file=sys.stderr,
            )
    rows = collect(names, out)
    table = to_markdown(rows)
    (out / "table.md").write_text(table)
    write_csv(rows, out / "table.csv")
    print(table)
    return 0 if all(r.get("logistic") is not None for r in rows) else 1


def train_command(names: list[str], root: Path, out: Path, jobs: int, overrides: list[str]) -> list[str]:
    """One multirun over the sets: a folder per set, finished ones skipped on a re-run."""
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "data=ucr",
        f"data.root={root}",
        f"data.name={','.join(names)}",
        "evaluate_after_train=true",
        "skip_finished=true",
        "threads=1",
        f"hydra.sweep.dir={out}",
        "hydra.sweep.subdir=${data.name}",
        *launcher,
        *overrides,
    ]


def published() -> dict[str, dict[str, float]]:
    with PUBLISHED.open() as file:
        return {
            row["dataset"]: {k: float(row[k]) for k in ("tloss_k10", "dtw_1nn") if row.get(k)}
            for row in csv.DictReader(file)
        }


def collect(names: list[str], out: Path) -> list[dict[str, float | str | None]]:
    """One row per set: its metrics (None where it has none yet) and the published numbers."""
    reference = published()
    rows = []
    for name in names:
        results = {**_read_json(out / name / "metrics.json"), **_read_json(out / name / "eval.json")}
        row: dict[str, float | str | None] = {"dataset": name}
        for key, (_, source) in COLUMNS.items():
            value = reference.get(name, {}).get(key) if source == "published" else results.get(source)
            row[key] = value / 60 if key == "minutes" and value is not None else value
        rows.append(row)
    return rows


def means(rows: list[dict]) -> dict[str, float | None]:
    """Each column's mean over the sets that have a value in it."""
    result = {}
    for key in COLUMNS:
        values = [r[key] for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
        result[key] = sum(values) / len(values) if values else None
    return result


def to_markdown(rows: list[dict]) -> str:
    headers = ["set", *(header for header, _ in COLUMNS.values())]
    lines = ["| " + " | ".join(headers) + " |", "|---" + "|---:" * len(COLUMNS) + "|"]
    for row in [*rows, {"dataset": "**mean**", **means(rows)}]:
        cells = [str(row["dataset"])] + [_fmt(row.get(key), key) for key in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *target_lines(rows)]
    return "\n".join(lines) + "\n"


def target_lines(rows: list[dict]) -> list[str]:
    """The comparisons the target is written in: raw 1-NN, 0.9 x T-Loss K=10, chance."""
    done = [r for r in rows if r.get("logistic") is not None]
    lines = []
    if len(done) < len(rows):
        missing = ", ".join(str(r["dataset"]) for r in rows if r.get("logistic") is None)
        lines.append(f"- not finished: {missing}")
    if not done:
        return lines
    logistic = sum(r["logistic"] for r in done) / len(done)
    raw = [r for r in done if r.get("raw_knn") is not None]
    if raw:
        raw_mean = sum(r["raw_knn"] for r in raw) / len(raw)
        lines.append(f"- logistic mean {logistic:.3f} vs raw 1-NN mean {raw_mean:.3f} over {_sets(len(raw))}")
    tloss = [r for r in done if r.get("tloss_k10") is not None]
    if tloss:
        ours = sum(r["logistic"] for r in tloss) / len(tloss)
        theirs = sum(r["tloss_k10"] for r in tloss) / len(tloss)
        lines.append(
            f"- over the {_sets(len(tloss))} with a T-Loss number: logistic mean {ours:.3f} vs T-Loss K=10 "
            f"{theirs:.3f} (0.9 x = {0.9 * theirs:.3f})"
        )
    return lines


def _sets(n: int) -> str:
    return f"{n} set" if n == 1 else f"{n} sets"


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, ["dataset", *COLUMNS], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _fmt(value: float | None, key: str) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if key == "minutes" else f"{value:.3f}"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    sys.exit(main())

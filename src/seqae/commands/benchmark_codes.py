"""What the codes are worth on real archive data, in one command.

    seqae-benchmark-codes --root data/archives --jobs 2        # every set in the folder
    seqae-benchmark-codes --root data/archives --jobs 2 --seeds 0,1,2 --control
    seqae-benchmark-codes --fetch --jobs 2                     # the sets the wheels ship
    seqae-benchmark-codes --root data/archives --datasets Coffee,CBF -- encoder.hidden_size=128

Trains every data set of ``--root`` (a folder in the archive's layout, ``<Name>/<Name>_TRAIN.tsv``
and ``_TEST.tsv``) with the default configuration, plus any ``train.py`` overrides after ``--``,
once per seed, and evaluates its codes. It is one ``python train.py -m data=ucr seed=... data.name=...
evaluate_after_train=true`` sweep, a job per set and seed in ``<out>/seed<k>/<Name>/``. The probes
fit on each set's official TRAIN file and score on its TEST file; the autoencoder never sees a
label or a TEST series. ``--jobs N`` trains N sets at a time (Hydra's joblib launcher, one thread
each). Run the same command again and finished sets are kept, and a killed one continues from its
last checkpoint (``skip_finished=true``). ``--control`` also runs the untrained control: the same
configuration after one optimizer step, in ``<out>/control/``.

``--fetch`` downloads the wheels of aeon 1.6.0, sktime 1.2.0 and tslearn 0.10.0 with
``pip download --no-deps`` (nothing is installed) and writes their sets under ``--root``
(seqae.data.fetch).

The table (printed, and written to ``<out>/table.md`` and ``table.csv``) has, per set: the logistic
probe's accuracy (mean ± std over the seeds; the main figure), TS2Vec's SVM protocol, the untrained
control, the reference accuracies of ``seqae/commands/reference.csv`` (T-Loss K=10 and 1-NN DTW as
published, MiniRocket and 1-NN on the raw series as measured on the same files; the file names each
source), the explained variance of the test reconstruction, and the minutes the set took. Under
it: the means, the mean rank among seqae and the four references, wins/ties/losses against each,
the sets at chance, and the median time per set. ``<out>/panel.png`` plots seqae against T-Loss
K=10 and MiniRocket, a point per set.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

from seqae.runs.folder import RunFolder

REFERENCE = Path(__file__).with_name("reference.csv")
# The sets the aeon, sktime and tslearn wheels ship (--fetch without --datasets)
WHEEL_SETS = (
    "UnitTest",
    "Covid3Month_disc",
    "Trace",
    "PickupGestureWiimoteZ",
    "OSULeaf",
    "ACSF1",
    "PLAID",
)
# The methods seqae is ranked among: (column in reference.csv, how the table names it)
REFERENCES = {
    "tloss_k10": "T-Loss K=10",
    "minirocket_ridge": "MiniRocket",
    "dtw_1nn": "1-NN DTW",
    "raw_1nn_euclidean": "1-NN raw",
}
# A set is "at chance" when its accuracy is at most 1 / classes + this
CHANCE_MARGIN = 0.05


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="data/archives", help="the archive folder (default: data/archives)")
    parser.add_argument(
        "--datasets",
        help="comma-separated set names (default: every set in --root; with --fetch, the wheels' sets)",
    )
    parser.add_argument("--out", default="outputs/benchmark_codes", help="the runs, the table and the plot")
    parser.add_argument("--jobs", type=int, default=1, help="sets trained at a time (default 1)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, each a full run (default 0)")
    parser.add_argument(
        "--control", action="store_true", help="also the untrained control (one optimizer step)"
    )
    parser.add_argument(
        "--fetch", action="store_true", help="download the wheels' sets into --root first (see above)"
    )
    parser.add_argument(
        "--table-only", action="store_true", help="print the table of what --out holds; train nothing"
    )
    parser.add_argument("overrides", nargs="*", help="train.py overrides, after --")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if args.jobs < 1 or not seeds:
        parser.error("--jobs must be at least 1 and --seeds must name at least one seed")
    root, out = Path(args.root).expanduser().resolve(), Path(args.out).expanduser().resolve()
    if args.datasets:
        names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    elif args.fetch:
        names = list(WHEEL_SETS)
    else:
        names = sets_in(root)
        if not names:
            parser.error(f"--root {root} holds no data set (<Name>/<Name>_TRAIN.tsv or .ts); name them")
    if args.fetch:
        from seqae.data.fetch import fetch

        fetch(names, root)
    out.mkdir(parents=True, exist_ok=True)
    failed = False
    if not args.table_only:
        runs = [(out, args.overrides)]
        if args.control:  # the same configuration, one optimizer step: what training adds
            control = ["trainer.max_steps=1", "trainer.val_check_interval=1"]
            runs.append((out / "control", [*args.overrides, *control]))
        for folder, overrides in runs:
            command = train_command(names, seeds, root, folder, args.jobs, overrides)
            print("$ " + " ".join(command), flush=True)
            returncode = run_sweep(command, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if returncode != 0:
                failed = True
                print(
                    f"error: the training sweep exited with {returncode}; the table shows what finished.",
                    file=sys.stderr,
                )
    rows = collect(names, seeds, out)
    table = to_markdown(rows, seeds)
    (out / "table.md").write_text(table)
    write_csv(rows, out / "table.csv")
    print(table)
    if plot(rows, out / "panel.png"):
        print(f"The plot: {out / 'panel.png'}")
    return 1 if failed or any(r["logistic"] is None for r in rows) else 0


def run_sweep(command: list[str], env: dict[str, str]) -> int:
    """Run the training sweep in a process group of its own, and stop the whole group on SIGINT or
    SIGTERM here. Hydra's joblib workers do not die with their parent: killed alone, the sweep would
    leave them training, and a rerun would race them for the same run folders. SIGTERM makes each
    job save its checkpoint and stop, so the rerun continues from it; the idle workers then leave
    after joblib's idle timeout."""
    sweep = subprocess.Popen(command, env=env, start_new_session=True)
    stopped_by: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopped_by.append(signum)
        os.killpg(sweep.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        returncode = sweep.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopped_by:
        print("Stopped; run the same command again to continue.", file=sys.stderr)
        raise SystemExit(128 + stopped_by[0])
    return returncode


def sets_in(root: Path) -> list[str]:
    """The data sets of an archive folder: each ``<Name>/`` holding a ``<Name>_TRAIN`` file."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob(f"{p.name}_TRAIN.*")))


def train_command(
    names: list[str], seeds: list[int], root: Path, out: Path, jobs: int, overrides: list[str]
) -> list[str]:
    """One multirun over seeds and sets: a folder per both, finished ones skipped on a re-run."""
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    return [
        sys.executable,
        "-m",
        "seqae.commands.train",
        "-m",
        "data=ucr",
        f"data.root={root}",
        f"seed={','.join(map(str, seeds))}",
        f"data.name={','.join(names)}",
        "evaluate_after_train=true",
        "skip_finished=true",
        "threads=1",
        f"hydra.sweep.dir={out}",
        "hydra.sweep.subdir=seed${seed}/${data.name}",
        *launcher,
        *overrides,
    ]


def references() -> dict[str, dict[str, float]]:
    """Per set: its number of classes and the reference accuracies (seqae/commands/reference.csv)."""
    with REFERENCE.open() as file:
        rows = csv.DictReader(line for line in file if not line.startswith("#"))
        return {
            row["set"]: {k: float(v) for k, v in row.items() if k not in ("set", "source") and v}
            for row in rows
        }


def collect(names: list[str], seeds: list[int], out: Path) -> list[dict]:
    """One row per set: the mean and std over the seeds that finished, and the references."""
    reference = references()
    rows = []
    for name in names:
        runs = [_results(out / f"seed{s}" / name) for s in seeds]
        controls = [_results(out / "control" / f"seed{s}" / name) for s in seeds]
        done = [r for r in runs if "eval/probe_accuracy" in r]
        row: dict = {"set": name, "seeds": len(done)}
        row["logistic"], row["logistic_std"] = _mean_std(r["eval/probe_accuracy"] for r in done)
        row["svm"], _ = _mean_std(r.get("eval/svm_accuracy") for r in done)
        row["control"], _ = _mean_std(r.get("eval/probe_accuracy") for r in controls)
        row["explained_variance"], _ = _mean_std(r.get("eval/explained_variance") for r in done)
        seconds, _ = _mean_std(r.get("seconds") for r in done)
        row["minutes"] = None if seconds is None else seconds / 60
        row.update({k: reference.get(name, {}).get(k) for k in ("classes", *REFERENCES)})
        rows.append(row)
    return rows


COLUMNS = {  # column -> header
    "logistic": "seqae (logistic)",
    "svm": "SVM",
    "control": "untrained",
    **REFERENCES,
    "explained_variance": "explained var.",
    "minutes": "minutes",
}


def to_markdown(rows: list[dict], seeds: list[int]) -> str:
    seeds_note = f"{len(seeds)} seeds ({','.join(map(str, seeds))})" if len(seeds) > 1 else f"seed {seeds[0]}"
    shown = [k for k in COLUMNS if k != "control" or any(r["control"] is not None for r in rows)]
    lines = ["| set | " + " | ".join(COLUMNS[k] for k in shown) + " |", "|---" + "|---:" * len(shown) + "|"]
    for row in rows:
        cells = [row["set"]]
        for key in shown:
            cell = _fmt(row[key], key)
            if key == "logistic" and row["seeds"] > 1:
                cell += f" ± {row['logistic_std']:.3f}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    means = {key: _mean(r[key] for r in rows) for key in shown}
    lines.append("| **mean** | " + " | ".join(_fmt(means[k], k) for k in shown) + " |")
    return "\n".join([*lines, "", f"seqae: {seeds_note}.", *summary_lines(rows)]) + "\n"


def summary_lines(rows: list[dict]) -> list[str]:
    """Means, mean ranks, wins/ties/losses, sets at chance, time per set."""
    done = [r for r in rows if r["logistic"] is not None]
    lines = []
    if len(done) < len(rows):
        lines.append("- not finished: " + ", ".join(r["set"] for r in rows if r["logistic"] is None))
    if not done:
        return lines
    lines.append(f"- logistic mean {_mean(r['logistic'] for r in done):.3f} over {_sets(len(done))}")
    for key, name in REFERENCES.items():
        both = [r for r in done if r[key] is not None]
        if both:
            ours, theirs = _mean(r["logistic"] for r in both), _mean(r[key] for r in both)
            wins, ties, losses = win_tie_loss(both, key)
            lines.append(
                f"- against {name} over the {_sets(len(both))} it reports: {ours:.3f} vs {theirs:.3f}; "
                f"wins/ties/losses {wins}/{ties}/{losses}"
            )
    ranked = [r for r in done if all(r[k] is not None for k in REFERENCES)]
    if ranked:
        ranks = mean_ranks(ranked)
        listed = ", ".join(
            f"{name} {ranks[key]:.2f}" for key, name in [("logistic", "seqae"), *REFERENCES.items()]
        )
        lines.append(f"- mean rank over the {_sets(len(ranked))} with every reference (1 is best): {listed}")
    if any(r["control"] is not None for r in done):
        both = [r for r in done if r["control"] is not None]
        gain = _mean(r["logistic"] - r["control"] for r in both)
        worse = [r["set"] for r in both if round(r["logistic"], 3) < round(r["control"], 3)]
        lines.append(
            f"- training adds {gain:+.3f} over the untrained control ({_sets(len(both))}); below it on "
            f"{len(worse)}" + (f": {', '.join(worse)}" if worse else "")
        )
    chance = [r for r in done if r["classes"] and r["logistic"] <= 1 / r["classes"] + CHANCE_MARGIN]
    lines.append(
        f"- at chance (accuracy <= 1/classes + {CHANCE_MARGIN}): "
        + (", ".join(f"{r['set']} ({r['logistic']:.3f})" for r in chance) or "none")
    )
    minutes = [r["minutes"] for r in done if r["minutes"] is not None]
    if minutes:
        lines.append(
            f"- minutes per set (one thread, training and evaluation): median {statistics.median(minutes):.2f}, "
            f"longest {max(minutes):.2f}"
        )
    return lines


def win_tie_loss(rows: list[dict], key: str) -> tuple[int, int, int]:
    """Against a reference column: accuracies equal to 3 decimals are ties."""
    diffs = [round(r["logistic"], 3) - round(r[key], 3) for r in rows]
    return sum(d > 1e-9 for d in diffs), sum(abs(d) <= 1e-9 for d in diffs), sum(d < -1e-9 for d in diffs)


def mean_ranks(rows: list[dict]) -> dict[str, float]:
    """Each method's mean rank over the sets (1 = most accurate; ties share the average rank)."""
    from scipy.stats import rankdata

    keys = ["logistic", *REFERENCES]
    ranks = [rankdata([-round(r[k], 3) for k in keys]) for r in rows]
    return {k: sum(rank[i] for rank in ranks) / len(ranks) for i, k in enumerate(keys)}


def plot(rows: list[dict], path: Path) -> bool:
    """seqae against T-Loss K=10 and MiniRocket, a point per set: above the diagonal, seqae wins."""
    pairs = [(k, n) for k, n in REFERENCES.items() if k in ("tloss_k10", "minirocket_ridge")]
    both = {k: [r for r in rows if r["logistic"] is not None and r[k] is not None] for k, _ in pairs}
    if not any(both.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 5), squeeze=False)
    for ax, (key, name) in zip(axes[0], pairs, strict=True):
        ax.plot([0, 1], [0, 1], color="0.6", linewidth=1)
        if both[key]:
            ax.scatter([r[key] for r in both[key]], [r["logistic"] for r in both[key]], s=18)
            wins, ties, losses = win_tie_loss(both[key], key)
            ax.set_title(f"seqae vs {name}: {wins} wins, {ties} ties, {losses} losses", fontsize=10)
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel=f"{name} accuracy", ylabel="seqae accuracy (logistic)")
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, list(rows[0]) if rows else ["set"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _results(folder: Path) -> dict:
    results = {}
    for file in (RunFolder(folder).metrics, RunFolder(folder).evaluation):
        with contextlib.suppress(OSError, ValueError):  # a set not finished yet
            results.update(json.loads(file.read_text()))
    return results


def _mean_std(values) -> tuple[float | None, float | None]:
    values = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not values:
        return None, None
    return sum(values) / len(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def _mean(values) -> float | None:
    return _mean_std(values)[0]


def _sets(n: int) -> str:
    return f"{n} set" if n == 1 else f"{n} sets"


def _fmt(value: float | None, key: str) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if key == "minutes" else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())

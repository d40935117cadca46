"""Which parts of the codes carry their accuracy, trained and untrained.

    python scripts/code_parts.py outputs/benchmark_codes --seeds 0,1,2 --jobs 2

reads the runs that ``seqae-benchmark-codes ... --control`` made (``<out>/seed<s>/<set>`` and
``<out>/control/seed<s>/<set>``), encodes each set's splits with each run's best checkpoint, as the
run's own evaluation did, and fits the linear probe (``eval/probe_accuracy``'s protocol) on each part
of the code alone and on some of their unions. The runs must use ``readout=pyramid`` with a
one-directional encoder: their codes are the final h, the maximum, the mean over the whole series,
over each half and over each quarter, and the series' own statistics (``model.instance_norm``).
Prints one Markdown table: each part's accuracy, averaged over the seeds and then over the sets
that every seed holds, trained and untrained. One thread per run, ``--jobs`` runs at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed
from omegaconf import OmegaConf

from seqae.errors import ConfigError, UserError
from seqae.evaluation.codes import encode_split, load_checkpoint_and_data
from seqae.evaluation.probes import probe_accuracies
from seqae.models.autoencoder import Autoencoder
from seqae.models.encoders import PYRAMID
from seqae.runs.folder import RunFolder

# The pyramid readout's blocks, in the code's order (seqae.models.encoders.RecurrentEncoder._read),
# each hidden_size times this wide: the final h, the maximum, then one mean per segment of each level
LEVELS = {1: "mean", 2: "halves", 4: "quarters"}
BLOCKS = {"final": 1, "max": 1, **{LEVELS[n]: n for n in PYRAMID}}
# Each part the table probes: the blocks it reads (stats: each series' own mean and log std)
PARTS = {
    "final h": ["final"],
    "max": ["max"],
    "mean": ["mean"],
    "halves": ["halves"],
    "quarters": ["quarters"],
    "max, mean, statistics": ["max", "mean", "stats"],
    "final h, max, mean, statistics (readout=pooled's parts)": ["final", "max", "mean", "stats"],
    "max, mean, halves, statistics": ["max", "mean", "halves", "stats"],
    "all but the quarters": ["final", "max", "mean", "halves", "stats"],
    "all but the final h": ["max", "mean", "halves", "quarters", "stats"],
    "the whole code": [*BLOCKS, "stats"],
}


def columns(model: Autoencoder) -> dict[str, np.ndarray]:
    """The code's column indices of each block of a pyramid readout."""
    encoder = model.encoder
    lstm, readout = getattr(encoder, "lstm", None), getattr(encoder, "readout", None)
    if readout != "pyramid" or lstm is None or lstm.bidirectional or encoder.project is not None:
        raise ConfigError(
            f"expected runs of seqae's recurrent encoder with readout=pyramid, one direction and no "
            f"encoder.latent_size; this one has {type(encoder).__name__} with readout={readout!r}."
        )
    hidden, start, blocks = lstm.hidden_size, 0, {}
    for name, multiple in BLOCKS.items():
        blocks[name] = np.arange(start, start + multiple * hidden)
        start += multiple * hidden
    blocks["stats"] = np.arange(start, model.code_size)
    return blocks


def part_accuracies(run_dir: Path) -> dict[str, tuple[float, int]]:
    """Each part's probe accuracy and width for one run, on the splits its own evaluation used."""
    run = RunFolder(run_dir)
    model, datamodule, _ = load_checkpoint_and_data(run.best_checkpoint, None, None, "cpu")
    splits = OmegaConf.load(run.config).eval
    train, train_labels = encode_split(model, datamodule, splits.train_split)
    test, test_labels = encode_split(model, datamodule, splits.test_split)
    blocks = columns(model)
    accuracies = {}
    for part, names in PARTS.items():
        cols = np.concatenate([blocks[n] for n in names])
        scores = probe_accuracies(train[:, cols], train_labels, test[:, cols], test_labels)
        accuracies[part] = (scores["eval/probe_accuracy"], len(cols))
    return accuracies


def one_thread_part_accuracies(run_dir: Path) -> dict[str, tuple[float, int]]:
    torch.set_num_threads(1)  # as the panel runs: one thread per run, --jobs runs at once
    return part_accuracies(run_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="a seqae-benchmark-codes --control output folder")
    parser.add_argument("--seeds", default="0", help="whose runs, comma-separated (default 0)")
    parser.add_argument("--jobs", type=int, default=1, help="runs encoded and probed at once (default 1)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    pairs = {s: (args.out / f"seed{s}", args.out / "control" / f"seed{s}") for s in seeds}
    names = sorted(
        set.intersection(
            *(
                {
                    p.name
                    for p in trained.glob("*")
                    if (control / p.name / "checkpoints" / "best.ckpt").is_file()
                }
                for trained, control in pairs.values()
            )
        )
    )
    if not names:
        print(
            f"error: {args.out}: no set has both a run in seed<s>/ and one in control/seed<s>/ for seeds "
            f"{args.seeds}; expected the output folder of seqae-benchmark-codes --seeds {args.seeds} --control.",
            file=sys.stderr,
        )
        return 2
    runs = [root / n for trained, control in pairs.values() for root in (trained, control) for n in names]
    try:
        results = Parallel(n_jobs=args.jobs)(delayed(one_thread_part_accuracies)(r) for r in runs)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    by_run = dict(zip(runs, results, strict=True))
    print(f"{len(names)} sets, seeds {args.seeds}: the linear probe on each part of the codes\n")
    print("| part of the code | width | trained | untrained | training adds |\n|---|---:|---:|---:|---:|")
    for part in PARTS:
        t, u = (
            np.mean([by_run[pair[i] / n][part][0] for pair in pairs.values() for n in names]) for i in (0, 1)
        )
        print(f"| {part} | {results[0][part][1]} | {t:.3f} | {u:.3f} | {t - u:+.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

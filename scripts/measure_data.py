"""Measure what the data pipeline costs: memory on large ``.npy`` files and variable-length speed.

    python scripts/measure_data.py                       # both measurements, files in a temp dir
    python scripts/measure_data.py memory --large-gb 4 --dir /big/disk
    python scripts/measure_data.py varlen --epochs 4

memory: writes a small (40 MB) and a large (4 GB) ``.npy`` of the same shape per row, trains the
same model for ``--steps`` steps on each with ``python train.py data=arrays ...`` in a fresh
process, and reports each child's peak RSS (``ru_maxrss``) and their ratio. Each file is
deleted as soon as its run ends.

varlen: trains the same model for a few epochs on equal-length sequences and on variable-length
ones with the same total number of valid steps (lengths uniform around the same mean), with and
without bucketing, and reports the median epoch time of each and the ratios to equal length.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_npy(path: Path, nbytes: int, seq_len: int, features: int, seed: int = 0) -> tuple[int, int, int]:
    """A float32 ``[N, seq_len, features]`` file of about ``nbytes``, written in chunks (flat memory)."""
    n = max(1, nbytes // (seq_len * features * 4))
    shape = (n, seq_len, features)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, {"descr": "<f4", "fortran_order": False, "shape": shape})
        rows = max(1, (64 << 20) // (seq_len * features * 4))
        for start in range(0, n, rows):
            k = min(rows, n - start)
            steps = np.arange(seq_len, dtype=np.float32)[None, :, None]
            phase = rng.uniform(0, 6.28, (k, 1, features)).astype(np.float32)
            chunk = np.sin(0.2 * steps + phase) + 0.1 * rng.standard_normal(
                (k, seq_len, features), np.float32
            )
            file.write(chunk.astype(np.float32).tobytes())
    return shape


def peak_rss_of_training(path: Path, steps: int, run_dir: Path, hidden: int) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``train.py`` training ``steps`` steps on ``path``, in a fresh process."""
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        "data=arrays",
        f"data.path={path}",
        f"encoder.hidden_size={hidden}",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=-1",
        "trainer.limit_val_batches=0",
        "trainer.accelerator=cpu",
        "~logger",
        "callbacks=none",
        "test=false",
        "optimized_metric=null",
        "threads=1",
        f"hydra.run.dir={run_dir}",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (ru_maxrss in KiB on Linux)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"training on {path} failed:\n{output[-3000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def measure_memory(args: argparse.Namespace, folder: Path) -> None:
    rows = []
    for label, nbytes in (("small", int(args.small_mb * 2**20)), ("large", int(args.large_gb * 2**30))):
        path = folder / f"measure_{label}.npy"
        t0 = time.perf_counter()
        shape = write_npy(path, nbytes, args.seq_len, args.features)
        written = time.perf_counter() - t0
        try:
            rss, wall = peak_rss_of_training(path, args.steps, folder / f"run_{label}", args.hidden)
        finally:
            path.unlink()  # 4 GB is a lot of disk to leave behind
        size = (np.prod(shape) * 4 + 128) / 2**20
        rows.append((label, size, shape, rss, wall))
        print(
            f"{label}: {size:9.1f} MiB file {shape}, written in {written:.1f} s; training {args.steps} steps: "
            f"peak RSS {rss:.1f} MiB, {wall:.1f} s wall (process start, data checks, statistics, training)"
        )
    print(
        f"peak RSS ratio large/small: {rows[1][3] / rows[0][3]:.3f} "
        f"(file size ratio {rows[1][1] / rows[0][1]:.0f}x)"
    )


def measure_varlen(args: argparse.Namespace, folder: Path) -> None:
    import lightning as L
    import torch

    from seqae.data import ArraysDataModule
    from seqae.training.module import SequenceAutoencoder

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n, mean, f = args.sequences, args.seq_len, args.features
    lengths = rng.integers(args.min_len, 2 * mean - args.min_len + 1, n)
    lengths = np.clip(lengths + (mean * n - lengths.sum()) // n, 1, None)  # the same total valid steps
    x = rng.standard_normal((n, int(lengths.max()), f)).astype(np.float32)
    x[np.arange(x.shape[1]) >= lengths[:, None]] = np.nan
    np.savez(folder / "variable.npz", x=x, lengths=lengths)
    np.save(folder / "equal.npy", rng.standard_normal((n, mean, f)).astype(np.float32))
    print(
        f"{n} sequences x {f} features: equal length {mean} ({n * mean} valid steps) vs lengths "
        f"{lengths.min()}..{lengths.max()} ({lengths.sum()} valid steps); batch {args.batch}, hidden {args.hidden}"
    )

    class EpochTimes(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_epoch_start(self, *_) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, *_) -> None:
            self.times.append(time.perf_counter() - self.start)

    def epoch_time(path: Path, readout: str, bucketing: bool) -> float:
        dm = ArraysDataModule(
            path=str(path),
            batch_size=args.batch,
            val_fraction=0.0,
            test_fraction=0.0,
            bucketing=bucketing,
            seed=0,
        )
        dm.setup("fit")
        encoder = {"_target_": "seqae.models.encoders.RecurrentEncoder", "hidden_size": args.hidden}
        decoder = {"_target_": "seqae.models.decoders.RepeatDecoder", "hidden_size": args.hidden}
        model = SequenceAutoencoder(f, encoder=encoder | {"readout": readout}, decoder=decoder)
        model.set_normalization(*dm.normalization())
        timer = EpochTimes()
        trainer = L.Trainer(
            max_epochs=args.epochs,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            use_distributed_sampler=False,
            callbacks=[timer],
        )
        trainer.fit(model, datamodule=dm)
        return statistics.median(timer.times[1:] or timer.times)  # the first epoch warms up

    for readout in ("hidden", "cell"):
        base = epoch_time(folder / "equal.npy", readout, True)
        bucketed = epoch_time(folder / "variable.npz", readout, True)
        unbucketed = epoch_time(folder / "variable.npz", readout, False)
        print(
            f"readout={readout}: equal length {base:.3f} s/epoch; variable length bucketed {bucketed:.3f} s "
            f"({bucketed / base:.2f}x), not bucketed {unbucketed:.3f} s ({unbucketed / base:.2f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", nargs="?", choices=("all", "memory", "varlen"), default="all")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (default: a temp dir)")
    parser.add_argument("--small-mb", type=float, default=40)
    parser.add_argument("--large-gb", type=float, default=4)
    parser.add_argument("--steps", type=int, default=300, help="training steps per memory run")
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sequences", type=int, default=2048, help="varlen: sequences per data set")
    parser.add_argument("--min-len", type=int, default=10, help="varlen: shortest sequence")
    parser.add_argument("--epochs", type=int, default=4, help="varlen: epochs per timing")
    args = parser.parse_args()
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="seqae_measure_") as folder:
        if args.what in ("all", "memory"):
            measure_memory(args, Path(folder))
        if args.what in ("all", "varlen"):
            measure_varlen(args, Path(folder))


if __name__ == "__main__":
    main()

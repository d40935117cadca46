"""The tutorial's pictures (docs/tutorial.md), drawn from a real run: ``make docs-figures``.

    python scripts/docs_figures.py --out docs/images

Writes a CSV of 600 Cylinder-Bell-Funnel series (Saito 1994; three classes, 128 steps) and their
labels, trains the default configuration on it as the tutorial's command does, and draws:
``tutorial-tensorboard.png`` (TensorBoard itself, in headless Chromium), ``tutorial-reconstruction.png``
(new series and their reconstructions) and ``tutorial-codes.png`` (new series' codes in 2-D, by class).
It prints the run's probe accuracy. ``--steps`` shortens the run; ``--no-screenshot`` skips TensorBoard.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cylinder_bell_funnel(n: int, length: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Saito's three shapes at a random onset and duration, in unit noise: [n, length] and classes 0-2."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    labels = np.arange(n) % 3
    series = np.empty((n, length))
    for i, label in enumerate(labels):
        a = rng.integers(16, 32)
        b = a + rng.integers(32, 96)
        inside = (t >= a) & (t <= b)
        ramp = {0: 1.0, 1: (t - a) / (b - a), 2: (b - t) / (b - a)}[label]
        series[i] = (6 + rng.normal()) * inside * ramp + rng.normal(size=length)
    return series, labels


def write_csv(folder: Path) -> tuple[Path, Path]:
    series, labels = cylinder_bell_funnel(600)
    np.savetxt(folder / "series.csv", series, delimiter=",", fmt="%.4f")
    np.savetxt(folder / "labels.csv", labels, fmt="%d")
    return folder / "series.csv", folder / "labels.csv"


def screenshot_tensorboard(run: Path, png: Path) -> None:
    """TensorBoard on the run, photographed by headless Chromium at 1280 x 900."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("error: no chromium on PATH (apt-get install chromium), or pass --no-screenshot")
    board = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(run), "--port", "6123"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(8)  # TensorBoard reads the event files before it serves them
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=8000", "--window-size=1280,900", f"--screenshot={png}",
             "http://localhost:6123/#scalars&tagFilter=loss&_smoothingWeight=0"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    finally:
        board.terminate()


def draw(run_dir: Path, out: Path) -> float:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    import seqae

    run = seqae.load(run_dir)
    series, y = cylinder_bell_funnel(150, seed=1)  # new series, never trained on
    x = series.astype(np.float32)[:, :, None]
    with torch.inference_mode():
        recon = run.model(torch.as_tensor(x[:3])).numpy()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3), sharey=True)
    for ax, i, r in zip(axes, range(3), recon, strict=True):
        ax.plot(x[i, :, 0], color="0.6", label="series")
        ax.plot(r[:, 0], color="C0", label="reconstruction")
        ax.set_title(["cylinder", "bell", "funnel"][y[i]])
    axes[0].legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "tutorial-reconstruction.png", dpi=100)

    codes = PCA(2).fit_transform(StandardScaler().fit_transform(run.encode(x)))  # as the probes see them
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, name in enumerate(["cylinder", "bell", "funnel"]):
        ax.scatter(*codes[y == label].T, s=12, label=name)
    ax.set_xlabel("first principal component of the standardised codes")
    ax.set_ylabel("second")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "tutorial-codes.png", dpi=100)
    return float(run.metrics["eval/probe_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images", help="where the PNGs go (default: docs/images)")
    parser.add_argument("--steps", type=int, default=None, help="trainer.max_steps (default: the config's)")
    parser.add_argument("--no-screenshot", action="store_true", help="skip the TensorBoard screenshot")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        series_csv, labels_csv = write_csv(folder)
        run_dir = folder / "run"
        budget = (
            [f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}"]
            if args.steps
            else []
        )
        command = [
            sys.executable, str(ROOT / "train.py"), "data=arrays", f"data.path={series_csv}",
            f"data.labels_path={labels_csv}", "evaluate_after_train=true", f"hydra.run.dir={run_dir}", *budget,
        ]  # fmt: skip
        subprocess.run(command, check=True)
        if not args.no_screenshot:
            screenshot_tensorboard(run_dir, out / "tutorial-tensorboard.png")
        accuracy = draw(run_dir, out)
    print(f"probe accuracy on the test split: {accuracy:.3f}; pictures in {out}")


if __name__ == "__main__":
    main()

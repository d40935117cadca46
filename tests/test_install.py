"""seqae as a package: a wheel built from the checkout, installed in a fresh environment, fits,
trains from its installed command (with seqae's encoder and with a researcher's own) and reloads a
run, from a folder outside the checkout."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY
from tests.models.test_targets import write_package

FIT = ["encoder.hidden_size=8", "trainer.max_steps=8", "trainer.val_check_interval=4"]


def run(*command: str | Path, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:  # a researcher's own package, importable as they would make it
        env["PYTHONPATH"] = str(pythonpath)
    proc = subprocess.run(
        list(map(str, command)), cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_fits_trains_and_reloads(tmp_path):
    dist, env, elsewhere = tmp_path / "dist", tmp_path / "env", tmp_path / "elsewhere"
    elsewhere.mkdir()
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        dist,
        ROOT,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("seqae-*.whl")
    run(sys.executable, "-m", "venv", env, cwd=tmp_path)
    python = env / "bin" / "python"
    # The new environment borrows this one's torch, Lightning and Hydra, but not its seqae: a .pth
    # adds a folder to the path without running the .pth files in it (the editable install's finder).
    purelib = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path
        ).stdout.strip()
    )
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path)

    notebook = textwrap.dedent(
        f"""
        import numpy as np, seqae
        assert "site-packages" in seqae.__file__ and {str(ROOT)!r} not in seqae.__file__, seqae.__file__
        x = np.random.default_rng(0).normal(size=(40, 12, 2)).astype("float32")
        run = seqae.fit(x, overrides={FIT!r})
        codes = seqae.load(run.dir).encode(x)
        assert codes.shape[0] == 40 and np.isfinite(codes).all()
        assert seqae.SequenceEncoder(overrides={FIT!r}).fit_transform(x).shape == codes.shape
        """
    )
    run(python, "-c", notebook, cwd=elsewhere)

    run(env / "bin" / "seqae-train", *TINY, "hydra.run.dir=cli_run", cwd=elsewhere)
    metrics = json.loads((elsewhere / "cli_run" / "metrics.json").read_text())
    assert metrics["steps"] == 8 and (elsewhere / "cli_run" / "train.log").is_file()
    run(
        env / "bin" / "seqae-encode",
        f"ckpt={elsewhere / 'cli_run' / 'checkpoints' / 'best.ckpt'}",
        "split=test",
        cwd=elsewhere,
    )
    assert (elsewhere / "cli_run" / "codes_test.npy").is_file()
    assert "Configuration groups" in run(env / "bin" / "seqae-evaluate", "--help", cwd=elsewhere).stdout

    # Their own encoder (the docs' example package), chosen by their own YAML, through the installed command;
    # the run reloads and encodes in a new process.
    src, conf = write_package(elsewhere)
    tiny = [o for o in TINY if not o.startswith("encoder.")]  # their encoder has no hidden_size
    choose = [f"hydra.searchpath=[file://{conf}]", "encoder=conv", "hydra.run.dir=their_run"]
    run(env / "bin" / "seqae-train", *tiny, *choose, cwd=elsewhere, pythonpath=src)
    reload = "import numpy as np, seqae; run = seqae.load('their_run'); "
    reload += "assert type(run.model.encoder).__module__ == 'mylab'; "
    reload += "print(run.encode(np.zeros((3, 12, 3), dtype='float32')).shape)"
    assert run(python, "-c", reload, cwd=elsewhere, pythonpath=src).stdout.strip() == "(3, 18)"
    assert "--root" in run(env / "bin" / "seqae-benchmark-codes", "--help", cwd=elsewhere).stdout

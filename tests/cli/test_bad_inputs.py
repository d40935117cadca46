"""Every bad input exits non-zero, names the culprit in one paragraph without a traceback, and
leaves an earlier run exactly as it was. A real bug keeps its traceback.

The troubleshooting table (docs/reliability.md) lists these cases; keep the two in step.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest

from tests.conftest import TINY, run_cli


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Path:
    """A finished run that no bad command may touch."""
    run = tmp_path_factory.mktemp("earlier") / "run"
    proc = run_cli(*TINY, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def files(tmp: Path) -> dict[str, Path]:
    corrupt = tmp / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    nans = np.random.default_rng(0).normal(size=(40, 10, 2)).astype(np.float32)
    nans[7, 3, 1] = np.nan
    np.save(tmp / "nans.npy", nans)
    (tmp / "a_file").write_text("")
    np.save(tmp / "objects.npy", np.array([{"a": 1}, None], dtype=object))
    (tmp / "words.csv").write_text("0.1,0.2,0.3\n0.4,high,0.6\n")
    return {"corrupt": corrupt, "nans": tmp / "nans.npy", "a_file": tmp / "a_file"}


# (name, overrides, what the message must name); {run}, {tmp} and {earlier} are filled in per test
CASES = [
    ("unknown group option", ["encoder=stackd"], ["stackd", "stacked"]),
    ("misspelled key", ["trainer.max_epoch=3"], ["max_epoch"]),
    ("appended unknown key", ["+trainer.max_epoch=3"], ["max_epoch"]),
    ("wrong type", ["data.batch_size=abc"], ["data.batch_size", "abc"]),
    ("zero size", ["encoder.hidden_size=0"], ["encoder.hidden_size", "0"]),
    ("gru with a cell readout", ["encoder=gru", "readout=cell"], ["readout='cell'", "GRU"]),
    (
        "a contrast of steps with an LSTM",
        ["encoder=single", "objective=hierarchical"],
        ["has no steps", "encoder=dilated"],
    ),
    (
        "the patch convolution beside the dilated encoder",
        ["model.conv_channels=32"],
        ["model.conv_channels=null"],
    ),
    ("a budget without an end", ["trainer.max_steps=-1"], ["set no end to training", "trainer.max_time"]),
    ("more devices than cores", ["trainer.accelerator=cpu", "trainer.devices=512"], ["trainer.devices=512"]),
    ("missing ckpt_path", ["ckpt_path={tmp}/nowhere.ckpt"], ["nowhere.ckpt", "does not exist"]),
    ("corrupt checkpoint", ["ckpt_path={tmp}/corrupt.ckpt"], ["corrupt.ckpt", "truncated, corrupt"]),
    (
        "checkpoint of another shape",
        ["ckpt_path={earlier}/checkpoints/last.ckpt", "encoder.hidden_size=16"],
        ["last.ckpt", "does not match", "hidden_size"],
    ),
    (
        "a NaN gap refused on request",
        ["data=arrays", "data.path={tmp}/nans.npy", "data.missing=error"],
        ["nans.npy", "NaN", "data.missing=interpolate"],
    ),
    (
        "an unknown missing-value rule",
        ["data=arrays", "data.path={tmp}/nans.npy", "data.missing=drop"],
        ["data.missing", "'drop'"],
    ),
    ("a .npy of Python objects", ["data=arrays", "data.path={tmp}/objects.npy"], ["objects.npy"]),
    ("a .csv with a word in it", ["data=arrays", "data.path={tmp}/words.csv"], ["words.csv", "'high'"]),
    (
        "a data folder that is not there",
        ["data=ucr", "data.root={tmp}", "data.name=Nope"],
        ["data.name=Nope"],
    ),
    ("a run folder inside a file", ["hydra.run.dir={tmp}/a_file/run"], ["a_file is a file"]),
    ("fresh run into an earlier run's folder", ["hydra.run.dir={earlier}"], ["already holds an earlier run"]),
    ("resume of a folder that is not a run", ["resume={tmp}"], ["is not a seqae run folder"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "overrides", "named"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly_and_touches_nothing(earlier, tmp_path, name, overrides, named):
    files(tmp_path)
    before = snapshot(earlier)
    fill = {"tmp": tmp_path, "earlier": earlier}
    args = [o.format(**fill) for o in overrides]
    if not any(a.startswith(("hydra.run.dir=", "resume=")) for a in args):
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    own_data = any(a.startswith("data=") for a in args)
    tiny = [t for t in TINY if not (own_data and t.startswith("data."))]
    proc = run_cli(*tiny, *args)
    assert proc.returncode != 0, f"{name}: exited 0\n{proc.stdout[-2000:]}"
    for text in named:
        assert text in proc.stderr + proc.stdout, f"{name}: {text!r} not in\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr + proc.stdout, f"{name}: a traceback\n{proc.stderr[-3000:]}"
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert snapshot(earlier) == before


class Boom(L.Callback):
    """A bug: an exception that is no user's mistake."""

    def on_fit_start(self, trainer, pl_module) -> None:
        raise RuntimeError("boom")


@pytest.mark.slow
def test_the_whole_traceback_on_request_and_for_a_real_bug(tmp_path):
    proc = run_cli(
        *TINY, "encoder.hidden_size=0", f"hydra.run.dir={tmp_path / 'a'}", env={"HYDRA_FULL_ERROR": "1"}
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "encoder.hidden_size" in proc.stderr
    proc = run_cli(
        *TINY, "+callbacks.boom._target_=tests.cli.test_bad_inputs.Boom", f"hydra.run.dir={tmp_path / 'b'}"
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "RuntimeError: boom" in proc.stderr

"""`python scripts/code_parts.py <benchmark out>` in a fresh process, on runs the panel command made."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from seqae.errors import ConfigError
from seqae.models.autoencoder import Autoencoder
from tests.commands.test_benchmark_codes import TINY, benchmark, write_set
from tests.conftest import ROOT, run_cli


@pytest.mark.slow
def test_code_parts_probes_each_part_and_the_whole_code_as_the_evaluation_did(tmp_path):
    root, out = tmp_path / "archives", tmp_path / "out"
    write_set(root, "Ramps")
    proc = benchmark(
        "--root", str(root), "--out", str(out), "--seeds", "0", "--control", "--", *TINY, "encoder=single"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    proc = run_cli(str(out), "--seeds", "0", script="scripts/code_parts.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        m[1]: (int(m[2]), float(m[3]), float(m[4]))
        for m in re.finditer(
            r"^\| ([^|]+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| [-+][\d.]+ \|$", proc.stdout, re.M
        )
    }
    hidden = 8  # TINY's encoder.hidden_size; the pyramid is 9 blocks of it, then mean and log std
    assert rows["final h"][0] == hidden and rows["quarters"][0] == 4 * hidden
    assert rows["the whole code"][0] == 9 * hidden + 2
    # The whole code, probed again, gives what each run's own evaluation wrote
    for column, run in ((1, out / "seed0" / "Ramps"), (2, out / "control" / "seed0" / "Ramps")):
        written = json.loads((run / "eval.json").read_text())["eval/probe_accuracy"]
        assert rows["the whole code"][column] == pytest.approx(written, abs=5e-4)


def test_code_parts_names_a_folder_without_control_runs(tmp_path):
    (tmp_path / "seed0" / "Ramps").mkdir(parents=True)
    proc = run_cli(str(tmp_path), script="scripts/code_parts.py")
    assert proc.returncode == 2
    assert "no set has both a run in seed<s>/ and one in control/seed<s>/" in proc.stderr
    assert "--control" in proc.stderr and "Traceback" not in proc.stderr


def test_code_parts_refuses_codes_that_are_not_a_pyramid_readout():
    spec = importlib.util.spec_from_file_location("code_parts", ROOT / "scripts" / "code_parts.py")
    code_parts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code_parts)
    encoder = {"_target_": "seqae.models.encoders.RecurrentEncoder", "hidden_size": 8}
    pyramid = Autoencoder(1, encoder={**encoder, "readout": "pyramid"}, instance_norm=True)
    assert [len(c) for c in code_parts.columns(pyramid).values()] == [8, 8, 8, 16, 32, 2]
    for other in ({"readout": "mean"}, {"readout": "pyramid", "latent_size": 4}):
        with pytest.raises(ConfigError, match=r"readout=pyramid, one direction and no encoder\.latent_size"):
            code_parts.columns(Autoencoder(1, encoder={**encoder, **other}))

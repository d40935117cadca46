"""The archive sets that the aeon, sktime and tslearn wheels ship, fetched and read as data=ucr reads them.

These tests download the wheels from PyPI once (``pip download --no-deps``, about 15 MB, kept in
pytest's cache folder): CI reaches the package index, as ``make`` itself needs.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from seqae.data import UCRDataModule
from seqae.data.fetch import WHEELS, download_wheel, fetch
from seqae.data.ucr import read_ts


@pytest.fixture(scope="session")
def wheels(pytestconfig) -> Path:
    return pytestconfig.cache.mkdir("wheels")


@pytest.mark.slow
def test_every_ts_file_in_the_aeon_wheel_parses(wheels, tmp_path):
    wheel = download_wheel("aeon==1.6.0", wheels)
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(WHEELS["aeon==1.6.0"]) and m.endswith(".ts")]
        archive.extractall(tmp_path, members)
    assert len(members) >= 25  # the 1.6.0 wheel ships 29
    for member in members:
        sequences, labels, *_ = read_ts(tmp_path / member)
        assert sequences and all(s.ndim == 2 for s in sequences), member
        assert labels is None or len(labels) == len(sequences), member


@pytest.mark.slow
def test_fetch_lays_out_the_development_sets_for_data_ucr(wheels, tmp_path):
    root = tmp_path / "archives"
    folders = fetch(["UnitTest", "Trace"], root, cache=wheels)
    assert sorted(folders) == ["Trace", "UnitTest"]
    trace = UCRDataModule(root=str(root), name="Trace", batch_size=8, seed=0)
    trace.setup()
    assert len(trace.split_data("train")) == 100 and len(trace.split_data("test")) == 100
    assert trace.split_data("train").x.shape[1:] == (275, 1) and len(trace.label_names) == 4
    unit = UCRDataModule(root=str(root), name="UnitTest", batch_size=8, seed=0)  # the aeon .ts layout
    unit.setup()
    assert (len(unit.split_data("train")), len(unit.split_data("test"))) == (20, 22)
    written = (root / "UnitTest" / "UnitTest_TRAIN.ts").stat().st_mtime_ns
    fetch(["UnitTest"], root, cache=wheels)  # already there: left as it is
    assert (root / "UnitTest" / "UnitTest_TRAIN.ts").stat().st_mtime_ns == written
    with pytest.raises(ValueError, match=r"No wheel in .* ships NoSuchSet; the ones they ship are .*OSULeaf"):
        fetch(["NoSuchSet"], root, cache=wheels)

"""data=ucr: the UCR 2018 .tsv layout and the UCR/UEA .ts format, official splits, bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from seqae.data import DataError, UCRDataModule
from seqae.errors import ConfigError


def write_tsv(root: Path, name: str = "Tiny", n_train: int = 10, n_test: int = 6, seed: int = 0) -> Path:
    """A UCR-2018-style folder: label first, tab-separated, trailing NaN for shorter series."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True)
    for split, n in (("TRAIN", n_train), ("TEST", n_test)):
        lines = []
        for i in range(n):
            length = 8 if i % 3 else 5
            values = [f"{v:.4f}" for v in rng.standard_normal(length)] + ["NaN"] * (8 - length)
            lines.append("\t".join([str([1, 2, -1][i % 3]), *values]))
        (folder / f"{name}_{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def write_ts(root: Path, name: str, train: str, test: str) -> None:
    """A UCR/UEA-style folder holding <name>_TRAIN.ts and <name>_TEST.ts."""
    folder = root / name
    folder.mkdir()
    (folder / f"{name}_TRAIN.ts").write_text(train)
    (folder / f"{name}_TEST.ts").write_text(test)


def make(root: Path, name: str = "Tiny", **kwargs) -> UCRDataModule:
    dm = UCRDataModule(root=str(root), name=name, **{"batch_size": 4, "seed": 0, **kwargs})
    dm.setup("fit")
    return dm


def test_tsv_official_test_split_and_validation_out_of_train(tmp_path):
    write_tsv(tmp_path)
    dm = make(tmp_path, val_fraction=0.2)
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 8, "val": 2, "test": 6}
    whole_train = dm.split_data("train")  # the whole official TRAIN file, for probes
    assert len(whole_train) == 10 and len(dm.split_data("all")) == 16
    assert dm.label_names == ["-1", "1", "2"]
    assert whole_train.labels.tolist() == [1, 2, 0] * 3 + [1]
    assert whole_train.lengths.tolist() == [5, 8, 8] * 3 + [5]
    first = (tmp_path / "Tiny" / "Tiny_TRAIN.tsv").read_text().split("\n")[0].split("\t")[1:6]
    torch.testing.assert_close(whole_train.x[0, :5, 0], torch.tensor([float(v) for v in first]))
    assert (whole_train.x[0, 5:] == 0).all()  # padding is zero in memory
    batch = next(iter(dm.split_loader("test")))
    assert set(batch) == {"x", "lengths", "labels"}


def test_ts_univariate_equal_length_with_declared_class_order(tmp_path):
    header = "# a comment\n@problemName Uni\n@timeStamps false\n@univariate true\n@equalLength true\n@classLabel true b a\n@data\n"
    write_ts(
        tmp_path,
        "Uni",
        header + "1,2,3,4:a\n5,6,7,8:b\n1,1,1,1:a\n2,2,2,2:b\n3,3,3,3:a\n",
        header + "4,3,2,1:b\n",
    )
    dm = make(tmp_path, "Uni")
    assert dm.label_names == ["b", "a"]  # the header's order
    train = dm.split_data("train")
    assert train.x.shape == (5, 4, 1) and train.lengths is None
    assert train.labels.tolist() == [1, 0, 1, 0, 1]
    assert train.x[1, :, 0].tolist() == [5, 6, 7, 8]


def test_ts_multivariate_unequal_length(tmp_path):
    header = "@problemName Multi\n@timeStamps false\n@univariate false\n@dimensions 2\n@equalLength false\n@classLabel true x y\n@data\n"
    cases = ["1,2,3:4,5,6:x", "1,2:3,4:y", "1,2,3,4:5,6,7,8:x", "9:9:y", "1,2,3:1,2,3:x"]
    write_ts(tmp_path, "Multi", header + "\n".join(cases) + "\n", header + "1,2,3,4,5:1,2,3,4,5:y\n")
    dm = make(tmp_path, "Multi", format="ts")
    train, everything = dm.split_data("train"), dm.split_data("all")
    assert dm.num_features == 2 and train.lengths.tolist() == [3, 2, 4, 1, 3]
    assert train.x[0].tolist() == [[1, 4], [2, 5], [3, 6], [0, 0]]
    assert everything.x.shape == (6, 5, 2) and everything.lengths.tolist() == [3, 2, 4, 1, 3, 5]


def test_ts_without_labels(tmp_path):
    header = "@problemName NoLab\n@classLabel false\n@data\n"
    write_ts(tmp_path, "NoLab", header + "1,2,3\n4,5,6\n7,8,9\n1,1,1\n2,2,2\n", header + "3,2,1\n")
    dm = make(tmp_path, "NoLab")
    assert dm.label_names is None and dm.split_data("train").labels is None


def ts(body: str, header: str = "@problemName Bad\n@classLabel true a b\n@data\n") -> str:
    return header + body


@pytest.mark.parametrize(
    ("train", "error", "message"),
    [
        ("1\t0.5\t0.25\n2\t0.5\tabc\n", DataError, r"Bad_TRAIN.tsv, line 2, column 3: 'abc' is not a number"),
        (
            "1\t0.5\tNaN\t0.25\n",
            DataError,
            r"Bad_TRAIN.tsv, line 1: the value at step 1 is nan, before the sequence ends",
        ),
        ("1\tNaN\tNaN\n", DataError, r"Bad_TRAIN.tsv, line 1: the sequence has no values"),
        ("\n\n", DataError, r"Bad_TRAIN.tsv: holds no sequences"),
    ],
)
def test_bad_tsv_names_the_file_and_line(tmp_path, train, error, message):
    folder = write_tsv(tmp_path, "Bad")
    (folder / "Bad_TRAIN.tsv").write_text(train)
    with pytest.raises(error, match=message):
        make(tmp_path, "Bad", missing="error")


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (ts("1,2,3:a\n1,2,x:b\n"), r"Bad_TRAIN.ts, line 5, dimension 0, value 3: 'x' is not a number"),
        (ts("1,2,3:a\n1,?,3:b\n"), r"Bad_TRAIN.ts, line 5: the value at step 1 is nan"),
        (
            ts("1,2,3:4,5:a\n"),
            r"Bad_TRAIN.ts, line 4: the dimensions have \[3, 2\] values; expected the same",
        ),
        (ts("1,2:3,4:a\n1,2:b\n"), r"Bad_TRAIN.ts, line 5: 1 dimensions; expected 2"),
        (
            "@problemName Bad\n1,2,3:a\n",
            r"Bad_TRAIN.ts, line 2: '1,2,3:a' before @data; expected header lines",
        ),
        ("@problemName Bad\n", r"Bad_TRAIN.ts: no @data line"),
        (ts("(0,1),(1,x):a\n"), r"Bad_TRAIN.ts, line 4, dimension 0, value 2: 'x' is not a number"),
    ],
)
def test_bad_ts_names_the_file_and_line(tmp_path, train, message):
    write_ts(tmp_path, "Bad", train, ts("1,2,3:a\n"))
    with pytest.raises(DataError, match=message):
        make(tmp_path, "Bad", missing="error")


def test_missing_archive_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.root=.*nowhere: no such folder"):
        make(tmp_path / "nowhere")
    write_tsv(tmp_path, "GunPoint")
    with pytest.raises(FileNotFoundError, match=r"no folder .*gunpoint \(did you mean data.name=GunPoint\?"):
        make(tmp_path, "gunpoint")
    (tmp_path / "GunPoint" / "GunPoint_TEST.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"it holds only GunPoint_TRAIN.tsv. A data set needs both"):
        make(tmp_path, "GunPoint")
    (tmp_path / "Empty").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"Empty: expected Empty_TRAIN.tsv and Empty_TEST.tsv or Empty_TRAIN.ts"
    ):
        make(tmp_path, "Empty")


def test_a_train_file_too_small_for_validation_is_refused(tmp_path):
    write_tsv(tmp_path, n_train=1)
    with pytest.raises(DataError, match=r"UCR data set Tiny .* cannot be split .* leaves 1/0/6"):
        make(tmp_path, val_fraction=0.2)


def test_auto_reads_the_format_whose_train_and_test_files_both_exist(tmp_path, caplog):
    """aeon ships <Name>_TRAIN.tsv beside <Name>_TRAIN.ts and <Name>_TEST.ts: auto takes the .ts pair."""
    header = "@problemName Shipped\n@univariate true\n@equalLength true\n@classLabel true 1 2\n@data\n"
    write_ts(tmp_path, "Shipped", header + "1,2,3:1\n4,5,6:2\n7,8,9:1\n3,2,1:2\n", header + "1,1,1:2\n")
    (tmp_path / "Shipped" / "Shipped_TRAIN.tsv").write_text("1\t9\t9\n2\t8\t8\n")
    with caplog.at_level("INFO", logger="seqae.data.ucr"):
        dm = make(tmp_path, "Shipped", val_fraction=0.25)
    assert "Shipped_TRAIN.ts and Shipped_TEST.ts" in caplog.text  # the choice is said
    assert dm.split_data("train").x.shape == (4, 3, 1)  # the .ts values, not the .tsv's
    assert dm.split_data("test").x[0, :, 0].tolist() == [1, 1, 1]


def test_ts_comments_and_time_stamps_as_the_archive_writes_them(tmp_path):
    """The aeon wheel's UnitTest files open with '%' comments; UnitTestTimeStamps has (time,value) pairs."""
    header = "%# a cut-down problem\n%\n@problemName Stamped\n@timeStamps true\n@univariate false\n@classLabel true 1 2\n@data\n"
    stamped = "(2007-01-01 00:00:00,1.5),(2007-01-01 00:01:00,2.5):(2007-01-01 00:00:00,3),(2007-01-01 00:01:00,4):{}\n"
    cases = "".join(stamped.format(label) for label in (1, 2, 1, 2, 1))
    write_ts(tmp_path, "Stamped", header + cases, header + stamped.format(2))
    dm = make(tmp_path, "Stamped", val_fraction=0.2)
    train = dm.split_data("train")
    assert train.x.shape == (5, 2, 2) and train.labels.tolist() == [0, 1, 0, 1, 0]
    assert train.x[0].tolist() == [[1.5, 3.0], [2.5, 4.0]]  # values in file order, times dropped


def test_gaps_inside_series_are_interpolated_and_counted_by_default(tmp_path, caplog):
    """As in DodgerLoopDay or MelbournePedestrian: NaN inside a series, and trailing NaN padding."""
    folder = tmp_path / "Gap"
    folder.mkdir()
    (folder / "Gap_TRAIN.tsv").write_text(
        "1\t0\tNaN\tNaN\t3\t4\n2\tNaN\t1\t2\tNaN\tNaN\n1\t1\t2\t3\t4\t5\n2\t5\t4\t3\t2\t1\n"
        "1\t0\t1\t2\t3\t4\n2\t4\t3\t2\t1\t0\n"
    )
    (folder / "Gap_TEST.tsv").write_text("1\t0\t1\tNaN\t3\t4\n2\t4\t3\t2\t1\t0\n")
    with caplog.at_level(logging.INFO, logger="seqae.data.ucr"):
        dm = make(tmp_path, "Gap", val_fraction=0.0, normalize="none")
    train = dm.split_data("train")
    # line 1: 0 _ _ 3 4 -> 0 1 2 3 4; line 2: a leading gap takes the first value, and the
    # trailing NaNs are padding (3 steps), not gaps
    assert train.x[0, :, 0].tolist() == [0, 1, 2, 3, 4]
    assert train.lengths[1] == 3 and train.x[1, :3, 0].tolist() == [1, 1, 2]
    assert dm.split_data("test").x[0, :, 0].tolist() == [0, 1, 2, 3, 4]
    assert torch.isfinite(train.x).all()
    assert "filled 3 missing values in Gap_TRAIN.tsv and 1 missing values in Gap_TEST.tsv" in caplog.text
    with pytest.raises(DataError, match=r"Gap_TRAIN.tsv, line 1: the value at step 1 is nan, before the"):
        make(tmp_path, "Gap", missing="error")


def test_gaps_in_a_ts_file_are_filled_per_dimension(tmp_path):
    write_ts(tmp_path, "GapTs", ts("1,?,3:4,5,?:a\n1,2,3:3,2,1:b\n"), ts("1,2,3:?,5,6:a\n"))
    dm = make(tmp_path, "GapTs", val_fraction=0.0, normalize="none")
    assert dm.split_data("train").x[0].tolist() == [[1, 4], [2, 5], [3, 5]]
    assert dm.split_data("test").x[0, :, 1].tolist() == [5, 5, 6]


def test_missing_must_be_a_known_rule(tmp_path):
    write_tsv(tmp_path)
    with pytest.raises(ConfigError, match=r"data.missing must be one of \('interpolate', 'error'\)"):
        make(tmp_path, missing="drop")

"""data=arrays: .npy (memory-mapped), .npz, .csv, windows over long series, and bad data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqae.data import ArraysDataModule, DataError
from seqae.data import rows as rows_module
from seqae.data.rows import LazyRows, PageKeeper, resident_file_bytes


def make(path, **kwargs) -> ArraysDataModule:
    dm = ArraysDataModule(path=str(path), **{"batch_size": 8, "seed": 0, **kwargs})
    dm.setup("fit")
    return dm


def save(tmp_path, array, name="x.npy"):
    path = tmp_path / name
    np.save(path, np.asarray(array))
    return path


def all_rows(dm, split="all"):
    """Every batch of split_loader(split), padded back to the data's T, concatenated."""
    t = dm.split_data(split).x.shape[1]
    return torch.cat(
        [torch.nn.functional.pad(b["x"], (0, 0, 0, t - b["x"].shape[1])) for b in dm.split_loader(split)]
    )


def test_npy_is_memory_mapped_and_splits_are_index_views(tmp_path):
    x = np.random.default_rng(0).standard_normal((50, 7, 3)).astype(np.float32)
    dm = make(save(tmp_path, x))
    train = dm.splits["train"]
    assert isinstance(train.x, LazyRows) and isinstance(train.x.source.array, np.memmap)
    assert train.x.source is dm.splits["val"].x.source  # one map, three index arrays
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 40, "val": 5, "test": 5}
    assert sorted(np.concatenate([dm.splits[s].x.index for s in ("train", "val", "test")])) == list(range(50))
    # a batch is the rows it names, in the order it names them
    index = torch.tensor([7, 2, 30])
    assert torch.equal(train.x[index], torch.from_numpy(x[train.x.index[[7, 2, 30]]]))
    assert torch.equal(all_rows(dm), torch.from_numpy(x))  # split_loader("all"): source order


def test_univariate_npy_gets_one_feature(tmp_path):
    dm = make(save(tmp_path, np.random.default_rng(0).standard_normal((30, 9))))
    assert dm.num_features == 1 and dm.split_data("all").x.shape == (30, 9, 1)


def test_trailing_nan_marks_shorter_sequences_and_batches_are_cut_and_zero_padded(tmp_path):
    x = np.random.default_rng(0).standard_normal((40, 10, 2)).astype(np.float32)
    lengths = np.random.default_rng(1).integers(3, 11, 40)
    for i, n in enumerate(lengths):
        x[i, n:] = np.nan
    dm = make(save(tmp_path, x))
    assert torch.equal(dm.split_data("all").lengths, torch.from_numpy(lengths))
    for batch in dm.train_dataloader():
        assert batch["x"].shape[1] == batch["lengths"].max()  # each batch cut to its own longest
        padding = torch.arange(batch["x"].shape[1]) >= batch["lengths"].unsqueeze(-1)
        assert torch.isfinite(batch["x"]).all() and (batch["x"][padding] == 0).all()


def test_npz_with_lengths_and_labels(tmp_path):
    x = np.random.default_rng(0).standard_normal((20, 6, 2)).astype(np.float32)
    lengths = np.arange(20) % 6 + 1
    x[np.arange(6) >= lengths[:, None]] = 1e6  # whatever the padding holds is ignored
    labels = np.array(["cat", "dog"] * 10)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, lengths=lengths, labels=labels)
    dm = make(path)
    data = dm.split_data("all")
    assert torch.equal(data.lengths, torch.from_numpy(lengths))
    assert dm.label_names == ["cat", "dog"] and data.labels.tolist() == [0, 1] * 10
    batch = next(iter(dm.split_loader("all")))
    assert set(batch) == {"x", "lengths", "labels"} and batch["x"].abs().max() < 1e5


@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_csv_one_sequence_per_row_or_column_with_a_header(tmp_path, layout):
    table = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, None, None], [7.0, 8.0, 9.0, None]] * 4
    cells = [["" if v is None else str(v) for v in row] for row in table]
    if layout == "columns":
        cells = [list(col) for col in zip(*cells, strict=True)]
    text = ",".join(f"s{i}" for i in range(len(cells[0]))) + "\n" + "\n".join(",".join(r) for r in cells)
    (tmp_path / "d.csv").write_text(text + "\n")
    dm = make(tmp_path / "d.csv", layout=layout, val_fraction=0.25, test_fraction=0.25)
    data = dm.split_data("all")
    assert data.x.shape == (12, 4, 1) and data.lengths.tolist() == [4, 2, 3] * 4
    assert data.x[1, :2, 0].tolist() == [5.0, 6.0]


def test_labels_path_gives_ids_and_names(tmp_path):
    path = save(tmp_path, np.zeros((6, 4, 1)) + np.arange(6)[:, None, None])
    (tmp_path / "labels.txt").write_text("10\n2\n10\n2\n-1\n2\n")
    dm = make(path, labels_path=str(tmp_path / "labels.txt"), val_fraction=0.2, test_fraction=0.2)
    assert dm.label_names == ["-1", "2", "10"]  # numbers sort as numbers
    assert dm.split_data("all").labels.tolist() == [2, 1, 2, 1, 0, 1]


def test_windows_over_one_long_series_are_index_arithmetic(tmp_path):
    series = np.random.default_rng(0).standard_normal((100, 3)).astype(np.float32)
    dm = make(save(tmp_path, series), window=20, stride=10, val_fraction=0.2, test_fraction=0.1)
    data = dm.split_data("all")
    assert isinstance(data.x, LazyRows) and data.x.shape == (9, 20, 3)  # starts 0, 10, ..., 80
    for i in (0, 4, 8):
        assert torch.equal(data.x[torch.tensor([i])][0], torch.from_numpy(series[i * 10 : i * 10 + 20]))
    assert torch.equal(
        all_rows(dm), torch.stack([torch.from_numpy(series[s : s + 20]) for s in range(0, 81, 10)])
    )


def test_windows_over_several_series_keep_each_series_label(tmp_path):
    series = np.random.default_rng(0).standard_normal((3, 30, 2)).astype(np.float32)
    series[1, 25:] = np.nan  # the second series is 25 steps long
    np.save(tmp_path / "y.npy", np.array([5, 6, 7]))
    dm = make(
        save(tmp_path, series),
        window=10,
        labels_path=str(tmp_path / "y.npy"),
        val_fraction=0.2,
        test_fraction=0.2,
    )
    data = dm.split_data("all")
    assert len(data) == 3 + 2 + 3  # stride defaults to the window
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2] and dm.label_names == ["5", "6", "7"]
    assert torch.equal(data.x[torch.tensor([4])][0], torch.from_numpy(series[1, 10:20]))


def test_normalisation_uses_the_training_split_only_in_chunks(tmp_path, monkeypatch):
    x = np.random.default_rng(0).normal(3.0, 2.0, (60, 8, 2)).astype(np.float32)
    x[::3, 5:] = np.nan  # padding never counts
    dm = make(save(tmp_path, x))
    train = dm.splits["train"]
    valid = torch.cat([train.x[torch.tensor([i])][0, : train.lengths[i]] for i in range(len(train))]).double()
    monkeypatch.setattr(rows_module, "CHUNK_BYTES", 8 * 8 * 2 * 4)  # 8 rows a chunk
    loc, scale = dm.normalization()
    torch.testing.assert_close(loc, valid.mean(0).float())
    torch.testing.assert_close(scale, valid.std(0).float())
    dm.normalize = "minmax"
    lo, width = dm.normalization()
    torch.testing.assert_close(lo, valid.min(0).values.float())
    torch.testing.assert_close(width, (valid.max(0).values - valid.min(0).values).float())


@pytest.mark.skipif(resident_file_bytes() is None, reason="needs /proc/self/statm (Linux)")
def test_reading_a_memory_map_hands_its_pages_back(tmp_path):
    path = save(tmp_path, np.ones((2048, 256, 8), np.float32))  # 16 MB
    array = np.load(path, mmap_mode="r")
    keeper = PageKeeper([array], budget=2**20)
    before = resident_file_bytes()
    assert float(array.sum()) > 0  # maps every page in
    assert resident_file_bytes() - before > 8 * 2**20
    keeper.check()  # over budget: pages handed back
    assert resident_file_bytes() - before < 4 * 2**20


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        np.save(path, content)
    return path


GOOD = np.ones((10, 5, 2), np.float32)


def nan_inside():
    x = GOOD.copy()
    x[6, 2, 1] = np.nan
    return x


def inf_inside():
    x = GOOD.copy()
    x[3, 4, 0] = np.inf
    return x


@pytest.mark.parametrize(
    ("file", "content", "kwargs", "error", "message"),
    [
        ("missing.npy", None, {}, FileNotFoundError, r"data.path=.*missing.npy: no such file"),
        (
            "x.parquet",
            "a,b\n",
            {},
            DataError,
            r"x.parquet: unknown file type '.parquet'; expected one of .npy",
        ),
        (
            "x.npy",
            nan_inside(),
            {"missing": "error"},
            DataError,
            r"x.npy: sequence 6 has the value nan at step 2, feature 1",
        ),
        ("x.npy", inf_inside(), {}, DataError, r"x.npy: sequence 3 has the value inf at step 4"),
        (
            "x.npy",
            np.ones((2, 3, 4, 5)),
            {},
            DataError,
            r"x.npy: an array of shape \(2, 3, 4, 5\) \(rank 4\); expected",
        ),
        ("x.npy", np.ones(50), {}, DataError, r"rank 1\); expected .* set data.window"),
        ("x.npy", np.ones((0, 5, 2)), {}, DataError, r"x.npy: holds no sequence values"),
        ("x.npy", np.full((4, 5, 2), np.nan), {}, DataError, r"x.npy: sequence 0 is all NaN"),
        (
            "x.npy",
            np.ones((3, 5, 2)),
            {},
            DataError,
            r"x.npy: 3 sequences cannot be split .* that leaves 3/0/0",
        ),
        (
            "x.npy",
            np.ones((40, 2)),
            {"window": 50},
            DataError,
            r"x.npy: series 0 has 40 steps, shorter than data.window=50",
        ),
        (
            "x.npy",
            GOOD,
            {"labels_path": "labels.txt"},
            DataError,
            r"labels.txt: 3 labels; expected one per sequence of .*x.npy, which holds 10",
        ),
        ("x.csv", "1,2,3\n4,x5,6\n", {}, DataError, r"x.csv, line 2, column 2: 'x5' is not a number"),
        (
            "x.npy",
            np.array(["a", "b"]),
            {},
            DataError,
            r"x.npy: holds values of type <U1; expected real numbers",
        ),
    ],
)
def test_bad_data_fails_at_setup_naming_the_file_and_the_problem(
    tmp_path, file, content, kwargs, error, message
):
    (tmp_path / "labels.txt").write_text("a\nb\na\n")
    path = tmp_path / file if content is None else write(tmp_path, file, content)
    if "labels_path" in kwargs:
        kwargs = {**kwargs, "labels_path": str(tmp_path / kwargs["labels_path"])}
    with pytest.raises(error, match=message):
        make(path, **kwargs)


def test_bad_npz_contents_are_named_by_key(tmp_path):
    np.savez(tmp_path / "a.npz", values=GOOD)
    with pytest.raises(DataError, match=r"a.npz: holds the keys \['values'\]; expected key 'x'"):
        make(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=GOOD, lengths=np.array([5] * 9 + [6]))
    with pytest.raises(DataError, match=r"b.npz, key 'lengths': sequence 9 has length 6; expected 1 to 5"):
        make(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", x=GOOD, labels=np.arange(4))
    with pytest.raises(DataError, match=r"c.npz, key 'labels': 4 labels; expected one per sequence"):
        make(tmp_path / "c.npz")
    (tmp_path / "d.npy").write_bytes(b"not an array")
    with pytest.raises(DataError, match=r"d.npy: cannot be read as a .npy file"):
        make(tmp_path / "d.npy")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "data.window must be a positive integer or null"),
        ({"stride": 3}, "data.stride=3 needs data.window"),
        ({"layout": "wide"}, "data.layout must be one of"),
    ],
)
def test_bad_settings_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ArraysDataModule(path=str(tmp_path / "x.npy"), **kwargs)

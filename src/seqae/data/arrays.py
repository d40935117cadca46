"""The user's own arrays: ``.npy`` (memory-mapped), ``.npz`` and ``.csv``, optionally cut into windows.

``python train.py data=arrays data.path=series.npy [data.window=128 data.stride=64]``

- ``.npy``: ``[N, T, F]`` or ``[N, T]`` (univariate). Opened with ``np.load(mmap_mode="r")``:
  splits are index arrays into the map and batches are read row by row, so a file larger than
  RAM trains with flat memory.
- ``.npz``: key ``x`` as above, optional ``lengths [N]`` and ``labels [N]``.
- ``.csv``: univariate sequences, one per row (``layout=rows``) or one per column
  (``layout=columns``, time running down the rows); an optional header line is skipped.

Trailing steps where every feature is NaN (or empty cells in a CSV) are padding: they mark a
shorter sequence. A NaN before that is a missing value, filled by linear interpolation
(``data.missing=interpolate``, the default; ``error`` refuses it); inf is always an error. With ``window`` set, the data are long
series instead: ``[T_total]`` or ``[T_total, F]`` is one series, ``[S, T_total, F]`` (or a CSV)
is several, and every ``window`` steps taken each ``stride`` steps is one training sequence.
"""

from __future__ import annotations

import csv
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from seqae.data.datamodule import DataError, SequenceData, SequenceDataModule, label_ids
from seqae.data.missing import check_missing, fill_each
from seqae.data.rows import LazyRows, MappedArray, Windows, iter_array_chunks, open_npy
from seqae.errors import ConfigError, MissingFileError

log = logging.getLogger(__name__)

EXTENSIONS = (".npy", ".npz", ".csv")
LAYOUTS = ("rows", "columns")


class ArraysDataModule(SequenceDataModule):
    name = "arrays"

    def __init__(
        self,
        path: str,
        labels_path: str | None = None,
        window: int | None = None,
        stride: int | None = None,
        layout: str = "rows",
        missing: str = "interpolate",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.missing = check_missing(missing)
        for key, value in (("window", window), ("stride", stride)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"data.{key} must be a positive integer or null, got {value!r}.")
        if stride is not None and window is None:
            raise ConfigError(
                f"data.stride={stride} needs data.window: the stride is the step between windows."
            )
        if layout not in LAYOUTS:
            raise ConfigError(
                f"data.layout must be one of {LAYOUTS} (how a CSV holds its sequences), got {layout!r}."
            )
        self.path = Path(str(path)).expanduser()
        self.labels_path = None if labels_path is None else Path(str(labels_path)).expanduser()
        self.window, self.stride, self.layout = window, stride or window, layout

    def describe(self) -> str:
        return str(self.path)

    def load(self) -> SequenceData:
        array, lengths, labels = self._read()
        what = "series" if self.window else "sequence"
        array = self._as_sequences(array)
        lengths, gaps = scan(array, self.describe(), what, lengths, self.missing)
        if gaps.any():
            array = np.array(array, dtype=np.float32)  # filled in memory: a memory map is read-only
            fill_each(array, lengths, gaps)
            log.info(
                "data.missing=interpolate: filled %s missing values inside %d %ss of %s by linear "
                "interpolation (data.missing=error refuses them).",
                f"{int(gaps.sum()):,}",
                int((gaps > 0).sum()),
                what,
                self.describe(),
            )
        labels = self._labels(labels, array.shape[0], what)
        if self.window:
            return self._windows(array, lengths, labels)
        if lengths is not None and (lengths == array.shape[1]).all():
            lengths = None  # no padding anywhere: an equal-length data set
        lengths_t = None if lengths is None else torch.from_numpy(lengths)
        if isinstance(array, np.memmap):
            return SequenceData(LazyRows(MappedArray(array)), lengths_t, labels)
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if lengths_t is not None:  # padding becomes zeros (files may pad with NaN)
            x[torch.arange(x.shape[1]) >= lengths_t.unsqueeze(-1)] = 0.0
        return SequenceData(x, lengths_t, labels)

    # -- reading -------------------------------------------------------------------------
    def _read(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(values, lengths or None, labels or None) as stored in the file."""
        path = self.path
        if not path.is_file():
            raise MissingFileError(
                f"data.path={path}: no such file{' (it is a folder)' if path.is_dir() else ''}; expected "
                f"a {', '.join(EXTENSIONS)} file (a relative path is taken from {Path.cwd()})."
            )
        suffix = path.suffix.lower()
        if suffix not in EXTENSIONS:
            raise DataError(
                f"data.path={path}: unknown file type {path.suffix or '(no extension)'!r}; expected one of "
                f"{', '.join(EXTENSIONS)} (for the UCR/UEA archives use data=ucr)."
            )
        if suffix == ".csv":
            return read_csv(path, self.layout)[..., None], None, None  # univariate: [N, T, 1]
        try:
            if suffix == ".npy":
                return _numeric(open_npy(path), str(path)), None, None
            with np.load(path, allow_pickle=False) as archive:
                if "x" not in archive.files:
                    raise DataError(
                        f"{path}: holds the keys {archive.files}; expected key 'x' with the sequences "
                        f"[N, T, F] (optional keys: 'lengths', 'labels')."
                    )
                x = _numeric(archive["x"], f"{path}, key 'x'")
                lengths = archive["lengths"] if "lengths" in archive.files else None
                labels = archive["labels"] if "labels" in archive.files else None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            if isinstance(err, DataError):
                raise
            raise DataError(f"{path}: cannot be read as a {suffix} file ({err}).") from err
        return x, self._check_lengths(lengths, x), labels

    def _check_lengths(self, lengths: np.ndarray | None, x: np.ndarray) -> np.ndarray | None:
        if lengths is None:
            return None
        where = f"{self.path}, key 'lengths'"
        if self.window:
            raise DataError(
                f"{where}: explicit lengths with data.window are not supported; pad with NaN instead."
            )
        if lengths.ndim != 1 or len(lengths) != x.shape[0] or not np.issubdtype(lengths.dtype, np.integer):
            raise DataError(
                f"{where}: shape {lengths.shape} dtype {lengths.dtype}; expected {x.shape[0]} integers, "
                f"one valid length per sequence of 'x' {x.shape}."
            )
        t = x.shape[1] if x.ndim > 1 else 0
        bad = np.flatnonzero((lengths < 1) | (lengths > t))
        if len(bad):
            raise DataError(
                f"{where}: sequence {bad[0]} has length {lengths[bad[0]]}; expected 1 to {t} (T of 'x')."
            )
        return lengths.astype(np.int64)

    def _as_sequences(self, array: np.ndarray) -> np.ndarray:
        """The array as [N, T, F]: sequences, or with a window, series to cut."""
        shape, where = array.shape, str(self.path)
        if self.window:
            if array.ndim == 1:
                return array[None, :, None]  # one univariate series
            if array.ndim == 2:
                return array[None]  # one series [T_total, F]
            if array.ndim == 3:
                return array
            raise DataError(
                f"{where}: an array of shape {shape} (rank {array.ndim}); with data.window expected one long "
                f"series [T_total] or [T_total, F], or several [S, T_total, F]."
            )
        if array.ndim == 2:
            return array[..., None]  # [N, T] univariate
        if array.ndim == 3:
            return array
        hint = " (one long series? set data.window to cut it into windows)" if array.ndim == 1 else ""
        raise DataError(
            f"{where}: an array of shape {shape} (rank {array.ndim}); expected sequences [N, T, F] or "
            f"[N, T] (univariate){hint}."
        )

    def _labels(self, stored: np.ndarray | None, n: int, what: str) -> torch.Tensor | None:
        if self.labels_path is not None:
            source, values = str(self.labels_path), read_labels(self.labels_path)
        elif stored is not None:
            source, values = f"{self.path}, key 'labels'", stored
        else:
            return None
        if values.ndim != 1 or len(values) != n:
            raise DataError(
                f"{source}: {len(values) if values.ndim == 1 else values.shape} labels; expected one per "
                f"{what} of {self.path}, which holds {n}."
            )
        ids, self.label_names = label_ids(values, source)
        return ids

    def _windows(
        self, array: np.ndarray, lengths: np.ndarray | None, labels: torch.Tensor | None
    ) -> SequenceData:
        lengths = np.full(array.shape[0], array.shape[1]) if lengths is None else lengths
        short = np.flatnonzero(lengths < self.window)
        if len(short):
            raise DataError(
                f"{self.path}: series {short[0]} has {lengths[short[0]]} steps, shorter than data.window="
                f"{self.window}; expected a window of at most {lengths.min()} steps (the shortest series)."
            )
        if not isinstance(array, np.memmap):
            array = np.ascontiguousarray(array, dtype=np.float32)
        windows = Windows(
            [array[s] for s in range(array.shape[0])], lengths.tolist(), self.window, self.stride
        )
        if labels is not None:  # each window has its series' label
            labels = labels[torch.from_numpy(windows.locate(np.arange(windows.n))[0])]
        return SequenceData(LazyRows(windows), None, labels)


def scan(
    array: np.ndarray,
    source: str,
    what: str = "sequence",
    lengths: np.ndarray | None = None,
    missing: str = "error",
) -> tuple[np.ndarray, np.ndarray]:
    """Each sequence's length (trailing all-NaN steps are padding) and how many NaN values lie before
    its end, checking that no value there is infinite (nor NaN, with ``missing="error"``). Reads the
    array in chunks, so a memory map stays on disk.
    """
    n, t, f = array.shape
    if n == 0 or t == 0 or f == 0:
        raise DataError(
            f"{source}: holds no {what} values (shape {array.shape}); expected at least one {what}."
        )
    found, gaps = np.empty(n, np.int64), np.zeros(n, np.int64)
    steps = np.arange(t)
    for start, chunk in iter_array_chunks(array):
        if lengths is None:
            padding = np.isnan(chunk).all(-1)[:, ::-1]  # [B, T], last step first
            chunk_lengths = t - np.cumprod(padding, axis=1).sum(1)
        else:
            chunk_lengths = lengths[start : start + len(chunk)]
        inside = (steps < chunk_lengths[:, None])[..., None]
        bad = (np.isinf(chunk) if missing == "interpolate" else ~np.isfinite(chunk)) & inside
        if bad.any():
            i, step, feature = np.argwhere(bad)[0]
            raise DataError(
                f"{source}: {what} {start + i} has the value {chunk[i, step, feature]} at step {step}, "
                f"feature {feature}, before its end (step {chunk_lengths[i]}); expected finite values. "
                f"NaN is allowed only as padding (trailing steps where every feature is NaN)"
                f"{'' if missing == 'interpolate' else ', or as a gap with data.missing=interpolate'}."
            )
        empty = np.flatnonzero(chunk_lengths == 0)
        if len(empty):
            raise DataError(f"{source}: {what} {start + empty[0]} is all NaN; expected at least one value.")
        found[start : start + len(chunk)] = chunk_lengths
        gaps[start : start + len(chunk)] = (np.isnan(chunk) & inside).sum((1, 2))
    return found, gaps


def prepare(x: np.ndarray, lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` ``[N, T, F]`` as the encoder takes it (``Run.encode``): NaN padding found and zeroed, gaps
    inside a series interpolated. Returns (x, lengths, or None when every series is full length)."""
    given = None if lengths is None else np.asarray(lengths, dtype=np.int64)
    lengths, gaps = scan(x, "x", "series", given, missing="interpolate")
    if gaps.any() or (lengths < x.shape[1]).any():
        x = x.copy()
        fill_each(x, lengths, gaps)
        x[np.arange(x.shape[1]) >= lengths[:, None]] = 0.0
    return x, (None if (lengths == x.shape[1]).all() else lengths)


def read_csv(path: Path, layout: str) -> np.ndarray:
    """A CSV of univariate sequences -> [N, T] float64, NaN where a sequence has ended."""
    rows: list[list[float]] = []
    with open(path, newline="") as file:
        for line, cells in enumerate(csv.reader(file), start=1):
            if not any(c.strip() for c in cells):
                continue
            values = []
            for column, cell in enumerate(cells, start=1):
                text = cell.strip()
                try:
                    values.append(float(text) if text else np.nan)
                except ValueError:
                    if not rows and not values:
                        break  # a header line
                    raise DataError(
                        f"{path}, line {line}, column {column}: {cell!r} is not a number; expected one "
                        f"number per cell (an empty cell marks the end of a shorter sequence)."
                    ) from None
            else:
                rows.append(values)
    if not rows:
        raise DataError(
            f"{path}: holds no sequences; expected one number per cell, a sequence per {layout[:-1]}."
        )
    width = max(len(r) for r in rows)
    table = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        table[i, : len(r)] = r
    return table if layout == "rows" else table.T


def read_labels(path: Path) -> np.ndarray:
    """Labels, one per sequence: a ``.npy`` array or a text/CSV file with one label per line."""
    if not path.is_file():
        raise MissingFileError(f"data.labels_path={path}: no such file; expected a .npy, .csv or .txt file.")
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{path}: cannot be read as a .npy file ({err}).") from err
    if path.suffix.lower() not in (".csv", ".txt"):
        raise DataError(
            f"data.labels_path={path}: unknown file type {path.suffix!r}; expected .npy, .csv or .txt."
        )
    return np.array([line.strip() for line in path.read_text().splitlines() if line.strip()])


def _numeric(array: np.ndarray, source: str) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise DataError(f"{source}: holds values of type {array.dtype}; expected real numbers.")
    return array

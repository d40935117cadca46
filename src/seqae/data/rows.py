"""Rows read on demand: memory-mapped arrays and windows over long series, never copied whole.

A ``LazyRows`` stands where a ``[N, T, F]`` tensor would: ``len``, ``shape`` and ``x[index]``
(a float32 tensor of those rows, in the order asked). It holds a *source* and an index array of
the source rows it covers, so a split is an index into the memory map rather than a copy.

Reading a memory map maps the pages it touches into the process, and Linux counts them in its
resident memory until the mapping goes away; one pass over a 4 GB file would leave 4 GB
"resident". Each read therefore checks the process's resident file pages (``/proc/self/statm``,
a few microseconds) and, once they have grown by ``PAGE_BUDGET``, hands the mapping's pages back
(``madvise(MADV_DONTNEED)``; they stay in the page cache, so reading them again is cheap).
Counting bytes read is not enough: one fault on a file mapping maps whole neighbouring folios.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

PAGE_BUDGET = 64 * 2**20  # resident bytes of memory maps allowed before their pages are handed back
CHUNK_BYTES = 8 * 2**20  # rows per chunk in whole-data passes (checks, statistics)


class RowSource:
    """Something with ``n`` rows of shape ``row_shape`` = (T, F) that reads sorted rows at once."""

    n: int
    row_shape: tuple[int, int]

    def read(self, rows: np.ndarray) -> np.ndarray:
        """rows: sorted int64 -> [len(rows), T, F]."""
        raise NotImplementedError


class MappedArray(RowSource):
    """A ``[N, T, F]`` array, usually ``np.load(path, mmap_mode="r")``; pages handed back as read."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.n, self.row_shape = array.shape[0], tuple(array.shape[1:])
        self.pages = PageKeeper([array])
        fixed_malloc_threshold()

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = self.array[rows]  # numpy reads sorted rows front to back: good locality on disk
        self.pages.check()
        return out


class Windows(RowSource):
    """Windows of ``window`` steps every ``stride`` steps over long series, by index arithmetic.

    Row ``i`` is the pair (series s, start) with ``offsets[s] <= i < offsets[s + 1]`` and
    ``start = (i - offsets[s]) * stride``; nothing is materialised until a batch is read.
    """

    def __init__(
        self, series: Sequence[np.ndarray], lengths: Sequence[int], window: int, stride: int
    ) -> None:
        self.series, self.window, self.stride = list(series), window, stride
        counts = [(length - window) // stride + 1 for length in lengths]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.n, self.row_shape = int(self.offsets[-1]), (window, self.series[0].shape[-1])
        self.pages = PageKeeper(self.series)

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Window ids -> (series index, start step)."""
        s = np.searchsorted(self.offsets, rows, side="right") - 1
        return s, (rows - self.offsets[s]) * self.stride

    def read(self, rows: np.ndarray) -> np.ndarray:
        series, starts = self.locate(rows)
        out = np.stack([self.series[s][t : t + self.window] for s, t in zip(series, starts, strict=True)])
        self.pages.check()
        return out


class LazyRows:
    """``[len(index), T, F]`` rows of a source, read on demand: ``x[index]`` -> float32 tensor."""

    def __init__(self, source: RowSource, index: np.ndarray | None = None) -> None:
        self.source = source
        # None: every row of the source. Otherwise int32 where it fits: on a file of millions of
        # rows the split indices are the only memory that grows with the data.
        dtype = np.int32 if source.n < 2**31 else np.int64
        self.index = None if index is None else np.asarray(index).astype(dtype, copy=False)

    def __len__(self) -> int:
        return self.source.n if self.index is None else len(self.index)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self), *self.source.row_shape)

    def rows(self, index: Tensor | np.ndarray | slice) -> np.ndarray:
        """Positions in this view -> rows of the source (int64)."""
        index = index.numpy() if isinstance(index, Tensor) else index
        if self.index is None:
            return (
                np.arange(self.source.n)[index] if isinstance(index, slice) else np.asarray(index, np.int64)
            )
        return self.index[index].astype(np.int64)

    def __getitem__(self, index: Tensor | np.ndarray | slice | int) -> Tensor:
        if isinstance(index, int):
            return self[np.array([index])][0]
        rows = self.rows(index)
        # Read the rows in file order (locality), then put them back in the order asked for.
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *self.source.row_shape), np.float32)
        out[order] = self.source.read(rows[order])
        return torch.from_numpy(out)

    def subset(self, index: Tensor | np.ndarray) -> LazyRows:
        """A view of some of these rows (an index array, not a copy)."""
        return LazyRows(self.source, self.rows(index))

    def chunks(self, nbytes: int | None = None) -> Iterator[tuple[np.ndarray, Tensor]]:
        """(positions, rows) over all rows in file order, a bounded number of bytes at a time."""
        nbytes = nbytes or CHUNK_BYTES
        step = max(1, nbytes // max(1, 4 * int(np.prod(self.source.row_shape))))
        order = None if self.index is None else np.argsort(self.index, kind="stable")
        for start in range(0, len(self), step):
            positions = (
                np.arange(start, min(start + step, len(self)))
                if order is None
                else order[start : start + step]
            )
            yield positions, self[positions]


class PageKeeper:
    """Hands memory-mapped pages back once the process's resident file pages grow by ``budget``."""

    def __init__(self, arrays: Sequence[np.ndarray], budget: int = PAGE_BUDGET) -> None:
        maps = (_mmap_of(a) for a in arrays)
        self.maps = list({id(m): m for m in maps if m is not None}.values())
        self.budget, self.baseline = budget, resident_file_bytes()

    def check(self) -> None:
        if not self.maps:
            return
        now = resident_file_bytes()
        if now is None or now - self.baseline > self.budget:
            self.release()

    def release(self) -> None:
        for m in self.maps:
            release_pages(m)
        self.baseline = resident_file_bytes()


def fixed_malloc_threshold(nbytes: int = 2**20) -> None:
    """Make glibc return buffers of ``nbytes`` or more to the system when they are freed.

    By default glibc raises its mmap threshold each time a large buffer is freed, after which such
    buffers come from the heap, which fragments and keeps growing over a pass of many chunks: on a
    1 GB file the statistics pass left ~100 MB more resident than on a 40 MB one. Fixing the
    threshold keeps memory flat; elsewhere (not glibc) this does nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, nbytes)  # M_MMAP_THRESHOLD


def resident_file_bytes() -> int | None:
    """This process's resident file-backed (and shared) memory, or None where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[2]) * mmap.PAGESIZE
    except OSError:
        return None


def iter_array_chunks(array: np.ndarray, nbytes: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float rows) of an array front to back, handing a memory map's pages back as it goes."""
    row_bytes = max(1, array[:1].nbytes)
    step = max(1, (nbytes or CHUNK_BYTES) // row_bytes)
    mapped = _mmap_of(array)
    for start in range(0, array.shape[0], step):
        dtype = np.float64 if array.dtype == np.float64 else np.float32
        yield start, np.asarray(array[start : start + step], dtype=dtype)
        release_pages(mapped)


def open_npy(path: Path) -> np.ndarray:
    """``np.load(path, mmap_mode="r")``: the array stays on disk and is paged in as rows are read."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def release_pages(mapped: mmap.mmap | None) -> None:
    """Drop a read-only mapping's pages from this process (they stay in the page cache)."""
    if mapped is not None and hasattr(mapped, "madvise"):
        mapped.madvise(mmap.MADV_DONTNEED)


def _mmap_of(array: np.ndarray) -> mmap.mmap | None:
    # np.memmap (and views of one) keep the mmap object they read from in `_mmap`.
    while array is not None:
        mapped = getattr(array, "_mmap", None)
        if mapped is not None:
            return mapped
        array = array.base if isinstance(array.base, np.ndarray) else None
    return None

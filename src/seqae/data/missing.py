"""Missing values inside a series: filled by linear interpolation (``data.missing=interpolate``, the
default, what the UCR archive's maintainers suggest) or refused (``data.missing=error``).

A step where every feature is NaN *after* the last observed value is padding (a shorter series), not
a missing value. A NaN before that is a gap. Gaps at the start take the first observed value, as
``numpy.interp`` extends an end. A feature with no observed value at all in a series is filled with
0 (the data's mean once normalised). Infinite values are always an error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqae.errors import ConfigError

MISSING = ("interpolate", "error")


def check_missing(missing: str) -> str:
    if missing not in MISSING:
        raise ConfigError(
            f"data.missing must be one of {MISSING} (what to do with NaN inside a series), got {missing!r}."
        )
    return missing


def fill_gaps(values: np.ndarray) -> int:
    """Fill the NaNs of ``values`` ``[T, F]`` (one series, its valid steps only) in place, each
    feature by linear interpolation over its observed steps. Returns how many were filled."""
    gaps = np.isnan(values)
    if not gaps.any():
        return 0
    steps = np.arange(values.shape[0])
    for feature in np.flatnonzero(gaps.any(0)):
        seen = ~gaps[:, feature]
        column = values[:, feature]
        column[~seen] = np.interp(steps[~seen], steps[seen], column[seen]) if seen.any() else 0.0
    return int(gaps.sum())


def lengths_and_gaps(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ``x`` ``[N, T, F]``: each series' length (trailing all-NaN steps are padding) and, per
    series, how many NaN values lie before that end."""
    padding = np.isnan(x).all(-1)[:, ::-1]  # [N, T], last step first
    lengths = x.shape[1] - np.cumprod(padding, axis=1).sum(1)
    inside = np.arange(x.shape[1]) < lengths[:, None]
    return lengths, (np.isnan(x) & inside[..., None]).sum((1, 2))


def prepare(x: np.ndarray, lengths: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` ``[N, T, F]`` as the encoder takes it: NaN padding found and zeroed, gaps inside a series
    interpolated. Returns (x, lengths or None when every series is full length)."""
    if lengths is None:
        lengths, gaps = lengths_and_gaps(x)
    else:
        lengths = np.asarray(lengths, dtype=np.int64)
        inside = np.arange(x.shape[1]) < lengths[:, None]
        gaps = (np.isnan(x) & inside[..., None]).sum((1, 2))
    if (lengths == 0).any():
        raise ConfigError(f"series {int(np.flatnonzero(lengths == 0)[0])} of x is all NaN; it has no values.")
    if np.isinf(x).any():
        i, step, feature = np.argwhere(np.isinf(x))[0]
        raise ConfigError(f"series {i} of x holds {x[i, step, feature]} at step {step}, feature {feature}.")
    if gaps.any() or (lengths < x.shape[1]).any():
        x = x.copy()
        for i in np.flatnonzero(gaps):
            fill_gaps(x[i, : lengths[i]])
        x[np.arange(x.shape[1]) >= lengths[:, None]] = 0.0
    return x, (None if (lengths == x.shape[1]).all() else lengths)

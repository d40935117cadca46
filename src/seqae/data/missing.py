"""Missing values inside a series: filled by linear interpolation (``data.missing=interpolate``, the
default, what the UCR archive's maintainers suggest) or refused (``data.missing=error``).

A step where every feature is NaN *after* the last observed value is padding (a shorter series), not
a missing value. A NaN before that is a gap. Gaps at the start take the first observed value, as
``numpy.interp`` extends an end. A feature with no observed value at all in a series is filled with
0 (the data's mean once normalised). Infinite values are always an error.
"""

from __future__ import annotations

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


def fill_each(x: np.ndarray, lengths: np.ndarray, gaps: np.ndarray) -> None:
    """Fill, in place, the gaps of every series of ``x`` ``[N, T, F]`` that has any (``gaps`` [N])."""
    for i in np.flatnonzero(gaps):
        fill_gaps(x[i, : lengths[i]])

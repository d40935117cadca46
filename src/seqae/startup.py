"""Importing torch and Lightning without paying the cyclic garbage collector for it.

Importing Lightning (with torch) creates about 0.7 M objects that live as long as the process.
With the collector on, each full collection on the way scans everything imported so far: about
0.8 s of a 4 s start-up on 2 cores (``scripts/benchmark.py --only startup``). Frozen afterwards,
those objects are also skipped by the full collections during training, which otherwise stop a
run for 0.2 s to 0.3 s each, at epoch ends. The price is the imports' own cyclic garbage (about
9 MiB), kept for the life of the process.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_imports() -> Iterator[None]:
    """Run the block's imports with the cyclic GC paused, then freeze what exists (``gc.freeze``).

    Only a block that imported something freezes: in a multirun, the second job's imports are
    already loaded, and a freeze then would keep the first job's garbage for good. A GC that the
    caller had turned off stays off.
    """
    if not gc.isenabled():
        yield
        return
    modules = len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        if len(sys.modules) > modules:
            gc.freeze()
        gc.enable()

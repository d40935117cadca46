"""One console: each message printed once (and written once to ``train.log``), without third-party noise.

Hydra's job logging gives the root logger a console handler and a file handler. The ``lightning``
package adds a console handler of its own at import, so every Lightning message would be printed
twice; it also advertises a cloud logger on every run, and its tree utilities trip a torch
deprecation warning on every fit. ``tidy_console()`` routes Lightning's messages through the root
logger alone and drops those two.
"""

from __future__ import annotations

import logging
import warnings

# Messages Lightning prints on every run that say nothing about the run.
ADVERTISEMENTS = ("💡 Tip:",)


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERTISEMENTS)


def tidy_console() -> None:
    """Idempotent; call it once Hydra has configured logging and Lightning is imported."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdvertisements) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdvertisements())
    # torch 2.13 deprecates isinstance checks on LeafSpec, which Lightning's _pytree still makes
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

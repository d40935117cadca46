"""The fast path's parts that stand alone: its batch groups, and the Lightning internals it relies on.

How it trains (the same steps, logs, validations and checkpoints as one step per call) is tested
through the model in tests/training/test_module.py.
"""

from __future__ import annotations

import operator

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.loops.optimization.manual import _ManualOptimization

from seqae.training.fast_path import PRIVATE_LIGHTNING_APIS, fetch_groups
from tests.conftest import quiet_trainer


@pytest.mark.parametrize(("owner", "name"), PRIVATE_LIGHTNING_APIS, ids=lambda v: str(v))
def test_the_private_lightning_apis_the_fast_path_touches_are_still_there(owner, name):
    """If this fails after a Lightning upgrade, seqae/training/fast_path.py needs a look before anything trains."""
    optimizer = LightningOptimizer(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1))
    roots = {
        "LightningOptimizer": optimizer,
        "_ManualOptimization": _ManualOptimization,  # installs the step counter's hooks on the optimizer
        "ModelCheckpoint": ModelCheckpoint(),
        "trainer": quiet_trainer(None),
    }
    first, _, rest = owner.partition(".")
    obj = roots[first]
    if rest:
        obj = operator.attrgetter(rest)(obj)
    assert hasattr(obj, name), f"Lightning no longer has {owner}.{name}"
    if owner == "trainer" and name == "_logger_connector":
        assert hasattr(obj._logger_connector, "should_update_logs")


def test_fetch_groups_hold_at_most_the_byte_limit_and_every_batch_once():
    batches = [{"x": torch.full((2, 3), float(i))} for i in range(7)]  # 24 bytes each
    groups = list(fetch_groups(iter(batches), limit_bytes=50))
    assert [len(g) for g in groups] == [2, 2, 2, 1]
    assert [int(b["x"][0, 0]) for g in groups for b in g] == list(range(7))
    assert [len(g) for g in fetch_groups(iter(batches), limit_bytes=10)] == [1] * 7  # a batch over it
    assert list(fetch_groups(iter([]), limit_bytes=50)) == []

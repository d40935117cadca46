from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from seqae.data import SinesDataModule
from seqae.data.datamodule import DataError, EpochBatchSampler
from tests.conftest import needs_cuda


def make(**kwargs) -> SinesDataModule:
    args = dict(num_sequences=100, seq_len=20, num_features=4, batch_size=8, seed=3)
    dm = SinesDataModule(**{**args, **kwargs})
    dm.setup("fit")
    return dm


def test_same_seed_same_data_and_splits():
    a, b = make(), make()
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split].x, b.splits[split].x)
    assert not torch.equal(make(seed=4).splits["train"].x, a.splits["train"].x)


def test_splits_partition_the_sequences():
    dm = make(val_fraction=0.2, test_fraction=0.1)
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 70, "val": 20, "test": 10}
    assert dm.splits["train"].x.shape[1:] == (20, 4) and dm.num_features == 4
    assert dm.splits["train"].labels.dtype == torch.long


def test_normalisation_comes_from_the_training_split():
    dm = make()
    loc, scale = dm.normalization()
    train = dm.splits["train"].x.reshape(-1, 4)
    torch.testing.assert_close(loc, train.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scale, train.std(0), atol=1e-5, rtol=1e-5)
    lo, width = make(normalize="minmax").normalization()
    torch.testing.assert_close(lo, train.min(0).values)
    torch.testing.assert_close(width, train.max(0).values - train.min(0).values)


def test_batches_are_slices_with_the_configured_size():
    dm = make()
    batches = list(dm.train_dataloader())
    assert [len(b["x"]) for b in batches] == [8] * 10
    assert set(batches[0]) == {"x", "labels"}


def test_loader_yields_what_a_torch_dataloader_yields_and_draws_no_global_randomness():
    """SliceLoader skips DataLoader's per-batch machinery, not its batches: the same index batches of
    the same sampler, sliced the same way. Its iterators leave the global RNG alone (a resumed run
    must draw the same dropout masks)."""
    dm = make()
    loader = dm.train_dataloader()
    assert isinstance(loader, DataLoader) and len(loader) == 10
    before = torch.get_rng_state()
    list(loader)
    assert torch.equal(torch.get_rng_state(), before)
    reference = DataLoader(loader.dataset, sampler=loader.sampler, batch_size=None, collate_fn=lambda b: b)
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        ours, theirs = list(loader), list(reference)
        assert len(ours) == len(theirs) == 10
        for a, b in zip(ours, theirs, strict=True):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def fake_cuda_trainer() -> SimpleNamespace:
    """What the DataModule asks of its Trainer, for a run on a CUDA device (no GPU needed)."""
    return SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cuda", 0)), global_rank=0, world_size=1
    )


def test_asking_for_the_data_on_a_gpu_too_small_for_it_is_refused_naming_the_sizes(monkeypatch):
    dm = make(on_device=True)
    dm.trainer = fake_cuda_trainer()
    train_bytes = dm.splits["train"].x.numel() * 4
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (train_bytes, 10 * train_bytes))
    with pytest.raises(
        DataError, match=r"data.on_device=true, but the train split's sequences take .* at most half"
    ):
        dm.train_dataloader()
    assert not dm._device_copies  # nothing half-copied


def test_on_device_changes_nothing_when_training_on_a_cpu():
    dm, host = make(on_device=True), make()
    dm.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)
    for a, b in zip(dm.train_dataloader(), host.train_dataloader(), strict=True):
        assert torch.equal(a["x"], b["x"])
    assert not dm._device_copies


@needs_cuda
def test_on_a_gpu_batches_are_sliced_on_the_device_and_equal_the_host_batches():
    host, device = make(on_device=False), make(on_device=True)
    for dm in (host, device):
        dm.trainer = L.Trainer(accelerator="gpu", devices=1, logger=False)
    for loader in ("train_dataloader", "val_dataloader"):
        batches = zip(getattr(host, loader)(), getattr(device, loader)(), strict=True)
        for h, d in batches:
            assert d["x"].device.type == "cuda" and h["x"].device.type == "cpu"
            torch.testing.assert_close(d["x"].cpu(), h["x"], rtol=0, atol=0)
            torch.testing.assert_close(d["labels"].cpu(), h["labels"], rtol=0, atol=0)


def test_shuffle_order_depends_only_on_seed_and_epoch():
    a, b = EpochBatchSampler(50, 8, True, seed=1), EpochBatchSampler(50, 8, True, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    b.set_epoch(4)
    assert [x.tolist() for x in a] != [x.tolist() for x in b]
    assert sorted(torch.cat(list(a)).tolist()) == list(range(50))


def test_ranks_get_disjoint_batches_and_the_same_count():
    ranks = [EpochBatchSampler(50, 4, True, seed=0, rank=r, world=2) for r in range(2)]
    r0, r1 = (list(s) for s in ranks)
    assert len(r0) == len(r1) == len(ranks[0])
    seen = torch.cat(r0 + r1).tolist()
    assert set(seen) == set(range(50))  # every sequence, the tail wrapped around to even it out


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_sequences": 3}, "cannot be split"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "must leave sequences to train on"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"normalize": "zscore"}, "normalize must be one of"),
        ({"on_device": "yes"}, "on_device must be true or false"),
        ({"seq_len": 0}, "seq_len must be a positive integer"),
    ],
)
def test_bad_settings_fail_before_training(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)

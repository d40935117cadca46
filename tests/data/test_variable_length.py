"""Variable length end to end: bucketing, batches cut to their own length, exact codes, masked loss,
and normalisation statistics that travel with the checkpoint."""

from __future__ import annotations

import itertools

import lightning as L
import numpy as np
import pytest
import torch

import seqae.models.encoders
from seqae.data import ArraysDataModule
from seqae.data.datamodule import BucketBatchSampler
from seqae.models.encoders import RecurrentEncoder
from seqae.models.layers import masked_mse
from seqae.training.module import SequenceAutoencoder
from tests.conftest import needs_cuda, quiet_trainer, recurrent

LENGTHS = torch.tensor([3, 17, 9, 12, 5, 20, 8, 15, 11, 4, 19, 6, 14, 7, 16, 10] * 5)


def spread(batches: list[torch.Tensor]) -> float:
    """Mean over batches of (longest - shortest) length: the padding a batch carries."""
    return float(np.mean([(LENGTHS[b].max() - LENGTHS[b].min()).item() for b in batches]))


def test_buckets_group_similar_lengths_and_cover_every_sequence_once():
    batches = list(BucketBatchSampler(LENGTHS, 8, shuffle=True, seed=0))
    assert sorted(torch.cat(batches).tolist()) == list(range(len(LENGTHS)))
    random = list(torch.randperm(len(LENGTHS), generator=torch.Generator().manual_seed(0)).split(8))
    assert spread(batches) < spread(random) / 3
    unshuffled = list(BucketBatchSampler(LENGTHS, 8, shuffle=False, seed=0))
    again = list(BucketBatchSampler(LENGTHS, 8, shuffle=False, seed=0))
    assert [b.tolist() for b in unshuffled] == [b.tolist() for b in again]  # the same every time
    by_length = sorted(unshuffled, key=lambda b: LENGTHS[b].min().item())
    assert all(LENGTHS[a].max() <= LENGTHS[b].min() for a, b in itertools.pairwise(by_length))
    # a validation cut to its first batches (limit_val_batches) still sees short and long sequences
    first = torch.cat(unshuffled[:3])
    assert LENGTHS[first].min() < 8 and LENGTHS[first].max() > 14


def test_bucket_order_depends_only_on_seed_and_epoch():
    a, b = BucketBatchSampler(LENGTHS, 8, True, seed=1), BucketBatchSampler(LENGTHS, 8, True, seed=1)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    first = [x.tolist() for x in a]
    a.set_epoch(1)
    assert [x.tolist() for x in a] != first


def test_bucket_batches_shard_over_ranks_with_equal_counts():
    ranks = [BucketBatchSampler(LENGTHS[:75], 4, True, seed=0, rank=r, world=2) for r in range(2)]
    r0, r1 = (list(s) for s in ranks)
    assert len(r0) == len(r1) == len(ranks[0])
    assert set(torch.cat(r0 + r1).tolist()) == set(range(75))  # the tail wraps around to even out


def test_equal_length_batches_skip_packing(monkeypatch):
    enc = RecurrentEncoder(3, 5, readout="cell").eval()
    x = torch.randn(4, 6, 3)
    expected = enc(x)

    def no_packing(*args, **kwargs):
        raise AssertionError("packed an equal-length batch")

    monkeypatch.setattr(seqae.models.encoders, "pack_padded_sequence", no_packing)
    torch.testing.assert_close(enc(x, torch.full((4,), 6)), expected, rtol=0, atol=0)


@pytest.fixture
def variable_npy(tmp_path):
    x = np.random.default_rng(0).standard_normal((48, 12, 2)).astype(np.float32) * 3 + 1
    lengths = np.random.default_rng(1).integers(2, 13, 48)
    x[np.arange(12) >= lengths[:, None]] = np.nan
    path = tmp_path / "variable.npy"
    np.save(path, x)
    return path


def test_nan_padding_never_reaches_the_loss(variable_npy):
    path = variable_npy
    dm = ArraysDataModule(path=str(path), batch_size=16, seed=0)
    dm.setup("fit")
    model = SequenceAutoencoder(2, **recurrent(4, readout="cell"))
    for batch in dm.train_dataloader():
        target, recon = model.reconstruction(batch["x"], batch["lengths"], teacher_forcing=True)
        loss = masked_mse(recon, target, batch["lengths"])
        per_sequence = [((recon[i, :n] - target[i, :n]) ** 2).sum() for i, n in enumerate(batch["lengths"])]
        assert torch.isfinite(loss)
        torch.testing.assert_close(loss, sum(per_sequence) / (batch["lengths"].sum() * 2))


def test_a_fit_on_variable_length_data_keeps_its_normalisation_in_the_checkpoint(variable_npy, tmp_path):
    path = variable_npy
    dm = ArraysDataModule(path=str(path), batch_size=16, seed=0)
    dm.setup("fit")
    model = SequenceAutoencoder(2, **recurrent(4, readout="cell"))
    model.set_normalization(*dm.normalization())
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)

    loaded = SequenceAutoencoder.load(ckpt)
    loc, scale = dm.normalization()
    torch.testing.assert_close(loaded.norm_loc, loc)
    torch.testing.assert_close(loaded.norm_scale, scale)
    assert (loc - 1).abs().max() < 0.5 and (scale - 3).abs().max() < 0.5  # the data's own units
    # new data in original units is normalised by the checkpoint's statistics, the same as in training
    new = torch.randn(3, 12, 2) * 3 + 1
    new_lengths = torch.tensor([12, 5, 9])
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.encode(new, new_lengths), loaded.encoder((new - loc) / scale, new_lengths)
        )


@needs_cuda
def test_memory_mapped_variable_length_data_on_a_gpu_gives_the_host_batches(variable_npy):
    host, device = (
        ArraysDataModule(path=str(variable_npy), batch_size=16, seed=0, on_device=o) for o in (False, True)
    )
    for dm in (host, device):
        dm.setup("fit")
        dm.trainer = L.Trainer(accelerator="gpu", devices=1, logger=False)
    for h, d in zip(host.train_dataloader(), device.train_dataloader(), strict=True):
        assert d["x"].device.type == "cuda" and d["lengths"].device.type == "cpu"  # lengths cut on the host
        torch.testing.assert_close(d["x"].cpu(), h["x"], rtol=0, atol=0)  # padding zeroed on the device too
        assert torch.equal(d["lengths"], h["lengths"])

"""The DataModule every data source shares: split, normalisation statistics, batching.

A source is a subclass that implements ``load()`` and returns a ``SequenceData``; everything
else (splits, statistics from the training split only, slicing batches out of tensors,
sharding batches across DDP ranks, a shuffle order derived from seed and epoch) lives here.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

NORMALIZATIONS = ("standard", "minmax", "none")


@dataclass
class SequenceData:
    """x: [N, T, F] float; lengths: [N] valid steps (None = all T); labels: [N] int ids."""

    x: Tensor
    lengths: Tensor | None = None
    labels: Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, index: Tensor) -> SequenceData:
        return SequenceData(
            self.x[index],
            None if self.lengths is None else self.lengths[index],
            None if self.labels is None else self.labels[index],
        )


class SequenceDataModule(L.LightningDataModule):
    """Splits a source into train/val/test and serves batches sliced from tensors.

    ``batch_size`` is the global batch: under DDP each rank gets ``batch_size / world_size``.
    """

    name = "sequences"  # what error messages call this source

    def __init__(
        self,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        normalize: str = "standard",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"data.batch_size must be a positive integer, got {batch_size!r}.")
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"data.{key} must be in [0, 1), got {value!r}.")
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(
                f"data.val_fraction + data.test_fraction must leave sequences to train on, "
                f"got {val_fraction} + {test_fraction}."
            )
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"data.normalize must be one of {NORMALIZATIONS}, got {normalize!r}.")
        self.batch_size, self.val_fraction, self.test_fraction = batch_size, val_fraction, test_fraction
        self.normalize, self.seed = normalize, seed
        self.splits: dict[str, SequenceData] = {}

    def load(self) -> SequenceData:
        """Return every sequence of the source. Subclasses implement this."""
        raise NotImplementedError

    # -- set-up ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # train.py sets up once to size the model; Lightning calls again
            return
        data = self.load()
        n = len(data)
        n_val, n_test = round(n * self.val_fraction), round(n * self.test_fraction)
        n_train = n - n_val - n_test
        if n_train < 1 or (self.val_fraction > 0 and n_val < 1) or (self.test_fraction > 0 and n_test < 1):
            raise ValueError(
                f"data ({self.name}): {n} sequences cannot be split into train/val/test with "
                f"val_fraction={self.val_fraction} and test_fraction={self.test_fraction}: "
                f"that leaves {n_train}/{n_val}/{n_test}; every split needs at least one sequence."
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        self.splits = {
            "train": data.subset(order[:n_train]),
            "val": data.subset(order[n_train : n_train + n_val]),
            "test": data.subset(order[n_train + n_val :]),
        }

    @property
    def num_features(self) -> int:
        return self.splits["train"].x.shape[-1]

    def normalization(self) -> tuple[Tensor, Tensor]:
        """Per-feature (loc, scale) of the training split's valid steps: the model uses (x - loc) / scale."""
        train = self.splits["train"]
        x = train.x.reshape(-1, train.x.shape[-1]).double()
        if train.lengths is not None:
            mask = torch.arange(train.x.shape[1]) < train.lengths.unsqueeze(-1)
            x = x[mask.reshape(-1)]
        if self.normalize == "standard":
            loc, scale = x.mean(0), x.std(0)
        elif self.normalize == "minmax":
            loc, scale = x.min(0).values, x.max(0).values - x.min(0).values
        else:
            loc, scale = torch.zeros(x.shape[1]), torch.ones(x.shape[1])
        scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))  # constant features
        return loc.float(), scale.float()

    # -- batches ---------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if self.batch_size % world:
            raise ValueError(
                f"data.batch_size={self.batch_size} is the global batch and must divide evenly over "
                f"{world} processes (trainer.devices x trainer.num_nodes); choose a multiple of {world}."
            )
        sampler = EpochBatchSampler(
            len(self.splits[split]), self.batch_size // world, shuffle, self.seed, rank, world
        )
        # batch_size=None: the sampler yields whole index batches, the dataset slices them at once.
        return DataLoader(
            BatchSlices(self.splits[split]), sampler=sampler, batch_size=None, collate_fn=_as_is
        )


class BatchSlices(Dataset):
    """Indexed by a whole batch of indices; returns the batch as one slice per tensor."""

    def __init__(self, data: SequenceData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: Tensor) -> dict[str, Tensor]:
        batch = {"x": self.data.x[index]}
        if self.data.lengths is not None:
            batch["lengths"] = self.data.lengths[index]
        if self.data.labels is not None:
            batch["labels"] = self.data.labels[index]
        return batch


class EpochBatchSampler(Sampler[Tensor]):
    """Index batches whose order depends only on (seed, epoch), sharded over DDP ranks.

    Lightning calls ``set_epoch`` before every epoch, so a resumed run sees the same order.
    Every rank gets the same number of batches (the tail is padded by wrapping around), so
    no rank waits on a collective the others never reach.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world, self.epoch = rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // (self.batch_size * self.world))

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.n)
        total = len(self) * self.batch_size * self.world
        if total > self.n and self.world > 1:
            order = order.repeat(-(-total // self.n))[:total]
        for i in range(len(self)):
            start = (i * self.world + self.rank) * self.batch_size
            batch = order[start : start + self.batch_size]
            if len(batch):
                yield batch


def _as_is(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return batch

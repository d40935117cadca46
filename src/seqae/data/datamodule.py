"""The DataModule every data source shares: split, normalisation statistics, batching.

A source is a subclass that implements ``load()`` and returns a ``SequenceData`` (or, for an
archive with official splits, ``{"train": ..., "test": ...}``); everything else (splits,
statistics from the training split only, slicing batches out of tensors or memory maps,
bucketing variable-length sequences, sharding batches across DDP ranks, a shuffle order derived
from seed and epoch) lives here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from seqae.data import rows
from seqae.data.rows import LazyRows
from seqae.errors import ConfigError, DataError
from seqae.models.layers import steps_mask

NORMALIZATIONS = ("standard", "minmax", "none")
SPLITS = ("train", "val", "test", "all")


@dataclass
class SequenceData:
    """x: [N, T, F] float (a tensor, or ``LazyRows`` read on demand: ``x[index]`` gives a tensor
    either way); lengths: [N] valid steps (None = all T); labels: [N] int ids (None = unlabelled).
    """

    x: Tensor | LazyRows
    lengths: Tensor | None = None
    labels: Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, index: Tensor) -> SequenceData:
        """The sequences at ``index`` (a copy for tensors, an index view for ``LazyRows``)."""
        return SequenceData(
            self.x.subset(index) if isinstance(self.x, LazyRows) else self.x[index],
            None if self.lengths is None else self.lengths[index],
            None if self.labels is None else self.labels[index],
        )

    def chunks(self, nbytes: int | None = None) -> Iterator[tuple[Tensor, Tensor | None]]:
        """(x, lengths) over every sequence, a bounded number of bytes at a time, in storage order."""
        nbytes = nbytes or rows.CHUNK_BYTES
        if isinstance(self.x, LazyRows):
            for positions, x in self.x.chunks(nbytes):
                yield x, None if self.lengths is None else self.lengths[torch.from_numpy(positions)]
            return
        step = max(1, nbytes // max(1, self.x[:1].numel() * 4))
        for start in range(0, len(self), step):
            yield (
                self.x[start : start + step],
                None if self.lengths is None else self.lengths[start : start + step],
            )


def concat(parts: list[SequenceData]) -> SequenceData:
    """In-memory sequences one after another, padded to the longest T (lengths keep them exact)."""
    t = max(p.x.shape[1] for p in parts)
    x = torch.cat([torch.nn.functional.pad(p.x, (0, 0, 0, t - p.x.shape[1])) for p in parts])
    lengths = None
    if any(p.lengths is not None or p.x.shape[1] != t for p in parts):
        lengths = torch.cat([full_lengths(p) for p in parts])
    labels = None
    if all(p.labels is not None for p in parts):
        labels = torch.cat([p.labels for p in parts])
    return SequenceData(x, lengths, labels)


def full_lengths(data: SequenceData) -> Tensor:
    if data.lengths is not None:
        return data.lengths
    return torch.full((len(data),), data.x.shape[1], dtype=torch.long)


class SequenceDataModule(L.LightningDataModule):
    """Splits a source into train/val/test and serves batches sliced from tensors.

    ``batch_size`` is the global batch: under DDP each rank gets ``batch_size / world_size``.
    ``bucketing``: variable-length sequences are batched with others of similar length and each
    batch is cut to its own longest sequence (see ``BucketBatchSampler``).
    ``on_device``: when the Trainer runs on a CUDA device, its loaders slice batches from a copy of
    each split's sequences there, as a hand-written GPU loop does, instead of copying every batch
    from host memory: far less host CPU per step, for data that fits in GPU memory.

    For an archive with an official TRAIN/TEST split (``load()`` returns both), ``test`` is the
    official TEST file, ``val`` is carved out of TRAIN for training, and ``split_data("train")``
    is the whole official TRAIN file (train + val), so downstream probes see the archive's splits.
    """

    name = "sequences"  # what error messages call this source

    def __init__(
        self,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        normalize: str = "standard",
        seed: int = 0,
        bucketing: bool = True,
        on_device: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"data.batch_size must be a positive integer, got {batch_size!r}.")
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"data.{key} must be in [0, 1), got {value!r}.")
        if val_fraction + test_fraction >= 1.0:
            raise ConfigError(
                f"data.val_fraction + data.test_fraction must leave sequences to train on, "
                f"got {val_fraction} + {test_fraction}."
            )
        if not isinstance(on_device, bool):
            raise ConfigError(f"data.on_device must be true or false, got {on_device!r}.")
        if normalize not in NORMALIZATIONS:
            raise ConfigError(f"data.normalize must be one of {NORMALIZATIONS}, got {normalize!r}.")
        self.batch_size, self.val_fraction, self.test_fraction = batch_size, val_fraction, test_fraction
        self.normalize, self.seed, self.bucketing = normalize, seed, bucketing
        self.on_device = on_device
        self._train_loader: DataLoader | None = None  # the fit's, whose position a checkpoint saves
        self._resume_train_at: dict[str, int] | None = None  # see state_dict
        self._device_copies: dict[str, SequenceData] = {}  # split -> its sequences on the device
        self.splits: dict[str, SequenceData] = {}
        self.label_names: list[str] | None = None  # label id -> the data's own name for it
        self._whole: dict[str, SequenceData] = {}  # "all" and the official "train" of an archive

    def load(self) -> SequenceData | dict[str, SequenceData]:
        """Every sequence of the source, or ``{"train": ..., "test": ...}`` for official splits."""
        raise NotImplementedError

    def describe(self) -> str:
        """How error messages name this data (sources that read files name the file)."""
        return self.name

    # -- set-up ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # train.py sets up once to size the model; Lightning calls again
            return
        data = self.load()
        generator = torch.Generator().manual_seed(self.seed)
        if isinstance(data, dict):  # official TRAIN / TEST: validation comes out of TRAIN
            train, test = data["train"], data["test"]
            n = len(train)
            n_val = round(n * self.val_fraction)
            self._check_split_sizes(n + len(test), n - n_val, n_val, len(test), official=True)
            order = torch.randperm(n, generator=generator)
            self.splits = {
                "train": train.subset(order[: n - n_val]),
                "val": train.subset(order[n - n_val :]),
                "test": test,
            }
            self._whole = {"train": train, "all": concat([train, test])}
            return
        n = len(data)
        n_val, n_test = round(n * self.val_fraction), round(n * self.test_fraction)
        self._check_split_sizes(n, n - n_val - n_test, n_val, n_test)
        order = torch.randperm(n, generator=generator)
        n_train = n - n_val - n_test
        self.splits = {
            "train": data.subset(order[:n_train]),
            "val": data.subset(order[n_train : n_train + n_val]),
            "test": data.subset(order[n_train + n_val :]),
        }
        self._whole = {"all": data}

    def _check_split_sizes(
        self, n: int, n_train: int, n_val: int, n_test: int, official: bool = False
    ) -> None:
        if n == 0:
            raise DataError(f"{self.describe()}: holds no sequences; expected at least one.")
        if (
            n_train >= 1
            and (self.val_fraction == 0 or n_val >= 1)
            and (n_test >= 1 or (not official and self.test_fraction == 0))
        ):
            return
        how = (
            f"the official TEST file ({n_test}) and data.val_fraction={self.val_fraction} of the "
            f"{n_train + n_val} TRAIN sequences"
            if official
            else f"data.val_fraction={self.val_fraction} and data.test_fraction={self.test_fraction}"
        )
        raise DataError(
            f"{self.describe()}: {n} sequences cannot be split into train/val/test with {how}: that "
            f"leaves {n_train}/{n_val}/{n_test}; every split needs at least one sequence. Lower the "
            f"fractions or use more data."
        )

    @property
    def num_features(self) -> int:
        return self.splits["train"].x.shape[-1]

    @property
    def sequence_length(self) -> int:
        """The longest training sequence, in steps."""
        train = self.splits["train"]
        return int(train.lengths.max()) if train.lengths is not None else train.x.shape[1]

    def split_data(self, split: str) -> SequenceData:
        """The sequences of ``split``: train, val, test, or all (every sequence, source order).

        For archive data ``train`` is the whole official TRAIN file (train + val).
        """
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}.")
        self.setup()
        return self._whole[split] if split in self._whole else self.splits[split]

    def normalization(self) -> tuple[Tensor, Tensor]:
        """Per-feature (loc, scale) of the training split's valid steps: the model uses (x - loc) / scale.

        Computed in chunks (Chan et al.'s pairwise mean/variance update), so memory stays flat
        however large the training split is.
        """
        train = self.splits["train"]
        f = train.x.shape[-1]
        count, mean, m2 = 0, torch.zeros(f, dtype=torch.float64), torch.zeros(f, dtype=torch.float64)
        low = torch.full((f,), torch.inf, dtype=torch.float64)
        high = torch.full((f,), -torch.inf, dtype=torch.float64)
        for x, lengths in train.chunks():
            x = x.double()
            x = x[steps_mask(lengths, x.shape[1])] if lengths is not None else x.reshape(-1, f)
            if not len(x):
                continue
            n_b, mean_b = len(x), x.mean(0)
            delta, total = mean_b - mean, count + n_b
            m2 = m2 + ((x - mean_b) ** 2).sum(0) + delta**2 * count * n_b / total
            mean, count = mean + delta * n_b / total, total
            low, high = torch.minimum(low, x.min(0).values), torch.maximum(high, x.max(0).values)
        if self.normalize == "standard":
            loc, scale = mean, (m2 / max(count - 1, 1)).sqrt()
        elif self.normalize == "minmax":
            loc, scale = low, high - low
        else:
            loc, scale = torch.zeros(f), torch.ones(f)
        scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))  # constant features
        return loc.float(), scale.float()

    # -- batches ---------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self._trainer_split("train"), shuffle=True)
        if self.trainer is not None:
            trainer = self.trainer
            # One Lightning epoch covers the whole step budget (or one pass over data larger than it):
            # a 20-series set then makes thousands of steps without thousands of epoch ends, each of
            # which costs Lightning's epoch machinery (and, on the fast path, a validation). A budget
            # in epochs (trainer.max_epochs) keeps Lightning's epochs as passes, so that it counts them.
            if trainer.max_steps > 0 and (trainer.max_epochs is None or trainer.max_epochs < 0):
                loader.sampler.passes = max(1, -(-trainer.max_steps // loader.sampler.batches_per_pass()))
            # resumable mid-epoch: see SliceLoader
            loader.batches_done = lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed
            if getattr(self, "_resume_train_at", None) is not None:
                loader.load_state_dict(self._resume_train_at)
                self._resume_train_at = None
        self._train_loader = loader
        return loader

    # A resumed fit continues its epoch where the checkpoint left it. The position is saved here, in
    # the datamodule's state, and not only as the loader's: Lightning restores a loader's state only
    # when it deems the fit "restarting", which an epoch-bounded run killed mid-epoch is not, while it
    # restores a datamodule's state before any loader exists, whatever the budget.
    def state_dict(self) -> dict[str, Any]:
        loader = getattr(self, "_train_loader", None)
        return {} if loader is None else {"train_position": loader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_train_at = state.get("train_position")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._trainer_split("val"), shuffle=False, by_length=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._trainer_split("test"), shuffle=False, by_length=True)

    def _trainer_split(self, split: str) -> SequenceData:
        """The split as the Trainer's loaders read it: on its CUDA device with ``on_device``.

        A batch copied from host memory costs the host a gather and a staged copy every step;
        slicing on the device costs it an index. Lengths stay on the host (cutting a batch to its
        longest sequence must not wait for the GPU).
        """
        data = self.splits[split]
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if not self.on_device or device is None or device.type != "cuda":
            return data
        if split not in self._device_copies:
            nbytes, free = 4 * int(np.prod(data.x.shape)), torch.cuda.mem_get_info(device)[0]
            if nbytes > free // 2:  # the model, its activations and the optimizer need room too
                raise DataError(
                    f"{self.describe()}: data.on_device=true, but the {split} split's sequences take "
                    f"{nbytes / 2**30:.2f} GiB and {device} has {free / 2**30:.2f} GiB free; they may "
                    f"take at most half of it. Use data.on_device=false: batches are then copied from "
                    f"host memory, one at a time."
                )
            labels = None if data.labels is None else data.labels.to(device)
            self._device_copies[split] = SequenceData(_copy_to(data.x, device), data.lengths, labels)
        return self._device_copies[split]

    def split_loader(self, split: str, shuffle: bool = False) -> DataLoader:
        """Batches of ``split`` for one process (not sharded); without shuffle, in the split's order,
        so row i of the concatenated outputs is row i of ``split_data(split)``.
        """
        return self._loader(self.split_data(split), shuffle=shuffle, shard=False)

    def _loader(
        self, data: SequenceData, shuffle: bool, by_length: bool = False, shard: bool = True
    ) -> DataLoader:
        rank, world = (
            (self.trainer.global_rank, self.trainer.world_size) if shard and self.trainer else (0, 1)
        )
        if self.batch_size % world:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is the global batch and must divide evenly over "
                f"{world} processes (trainer.devices x trainer.num_nodes); choose a multiple of {world}."
            )
        args = (self.batch_size // world, shuffle, self.seed, rank, world)
        if data.lengths is not None and self.bucketing and (shuffle or by_length):
            sampler: Sampler = BucketBatchSampler(data.lengths, *args)
        else:
            sampler = EpochBatchSampler(len(data), *args)
        # batch_size=None: the sampler yields whole index batches, the dataset slices them at once.
        # Creating an iterator must not draw from the global RNG, or a resumed run (which validates
        # once more before training) would draw different dropout masks: SliceLoader draws nothing,
        # and DataLoader's worker seeds (with workers) come from a generator of its own.
        return SliceLoader(
            BatchSlices(data),
            sampler=sampler,
            batch_size=None,
            collate_fn=_as_is,
            generator=torch.Generator(),
        )


class SliceLoader(DataLoader):
    """A DataLoader of whole batches sliced out of tensors: in this process (no workers) it yields
    ``dataset[index]`` for each index batch of its sampler, and nothing else.

    DataLoader's own iterator wraps each batch in a profiler range and a collate call, and draws a
    seed for workers that do not exist: 10 us a batch, 15 us inside a fit, 0.45% of a seed-sized step.

    With ``batches_done`` (the training loader) it is resumable mid-epoch: Lightning saves
    ``state_dict()`` in each checkpoint, and a resumed fit's first pass skips the batches of that
    epoch that were already trained on. The order of an epoch's batches depends only on (seed,
    epoch), so the rest of the epoch is exactly what an uninterrupted run would see.
    """

    def __init__(self, *args: Any, batches_done: Callable[[], int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_done, self._resume_at = batches_done, None

    def state_dict(self) -> dict[str, int]:
        # Lightning's count, not ours: its fetcher may have taken a batch ahead of training.
        done = self.batches_done() if self.batches_done is not None else 0
        return {"epoch": getattr(self.sampler, "epoch", 0), "batches": done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = (state["epoch"], state["batches"])

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        if self._resume_at is not None:
            return self._resumed()
        if self.num_workers > 0:
            return super().__iter__()
        return map(self.dataset.__getitem__, self.sampler)

    def _resumed(self) -> Iterator[dict[str, Tensor]]:
        # A generator: it runs at the first fetch, after Lightning has set the sampler's epoch.
        (epoch, done), self._resume_at = self._resume_at, None
        batches = iter(self.sampler)
        if getattr(self.sampler, "epoch", 0) == epoch:
            batches = itertools.islice(batches, done, None)
        yield from map(self.dataset.__getitem__, batches)


class BatchSlices(Dataset):
    """Indexed by a whole batch of indices; returns the batch as one slice per tensor.

    A variable-length batch is cut to its own longest sequence and its padding set to zero
    (files may pad with NaN; the masked loss multiplies padding by zero, and NaN * 0 is NaN).
    """

    def __init__(self, data: SequenceData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: Tensor | slice) -> dict[str, Tensor]:
        x = _take(self.data.x, index)
        batch = {"x": x}
        if self.data.lengths is not None:
            lengths = _take(self.data.lengths, index)
            x = x[:, : int(lengths.max())]
            padding = ~steps_mask(lengths, x.shape[1]).unsqueeze(-1)
            batch["x"] = x.masked_fill(padding.to(x.device, non_blocking=True), 0.0)
            batch["lengths"] = lengths
        if self.data.labels is not None:
            batch["labels"] = _take(self.data.labels, index)
        return batch


def _copy_to(x: Tensor | LazyRows, device: torch.device) -> Tensor:
    """``x`` as one tensor on ``device``; a memory map is read a chunk at a time, in file order."""
    if isinstance(x, Tensor):
        return x.to(device)
    out = torch.empty(x.shape, dtype=torch.float32, device=device)
    for positions, chunk in x.chunks():
        out[torch.from_numpy(positions).to(device)] = chunk.to(device)
    return out


def _take(values: Tensor | LazyRows, index: Tensor | slice) -> Tensor:
    # index_select: a quarter of the cost of x[index] for a batch of rows (3 us against 12 us)
    if isinstance(values, Tensor) and isinstance(index, Tensor):
        return values.index_select(0, index.to(values.device, non_blocking=True))
    return values[index]


class EpochBatchSampler(Sampler[Tensor]):
    """Index batches whose order depends only on (seed, pass), sharded over DDP ranks.

    One Lightning epoch is ``passes`` passes over the data, each shuffled by its own number
    (``epoch * passes + pass``). Lightning calls ``set_epoch`` before every epoch, so a resumed run
    sees the same order. Every rank gets the same number of batches (the tail is padded by
    wrapping around), so no rank waits on a collective the others never reach.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world: int = 1,
        passes: int = 1,
    ):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world, self.epoch, self.passes = rank, world, 0, passes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches_per_pass(self) -> int:
        return -(-self.n // (self.batch_size * self.world))

    def __len__(self) -> int:
        return self.passes * self.batches_per_pass()

    def __iter__(self):
        for p in range(self.passes):
            yield from self._pass(self.epoch * self.passes + p)

    def _pass(self, number: int) -> Iterator[Tensor]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + number))
        else:
            order = torch.arange(self.n)
        batches = self.batches_per_pass()
        total = batches * self.batch_size * self.world
        if total > self.n and self.world > 1:
            order = order.repeat(-(-total // self.n))[:total]
        for i in range(batches):
            start = (i * self.world + self.rank) * self.batch_size
            batch = order[start : start + self.batch_size]
            if len(batch):
                yield batch


class BucketBatchSampler(EpochBatchSampler):
    """Batches of similar length, so a batch is cut to little more than its own sequences.

    Shuffled (training): each pass's seeded permutation is cut into pools of ``pool_batches``
    batches, each pool is sorted by length and cut into batches, and the batches are shuffled;
    pools keep batches varied from pass to pass. Not shuffled (validation, testing): batches of
    the sequences sorted by length, in an order fixed by the seed. Passes, epochs and sharding as in ``EpochBatchSampler``: batch ``i * world + rank``
    goes to ``rank``, and every rank gets the same number of batches.
    """

    def __init__(
        self,
        lengths: Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world: int = 1,
        passes: int = 1,
        pool_batches: int = 50,
    ):
        super().__init__(len(lengths), batch_size, shuffle, seed, rank, world, passes)
        self.lengths, self.pool_batches = lengths, pool_batches

    def batches_per_pass(self) -> int:
        batches = -(-len(self.lengths) // self.batch_size)
        return -(-batches // self.world)

    def _pass(self, number: int) -> Iterator[Tensor]:
        n = len(self.lengths)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + number)
            order = torch.randperm(n, generator=g)
            pool = self.batch_size * self.world * self.pool_batches
            order = torch.cat(
                [p[torch.sort(self.lengths[p], stable=True).indices] for p in order.split(pool)]
            )
        else:
            order = torch.sort(self.lengths, stable=True).indices
        batches = list(order.split(self.batch_size))
        # Not shuffled, the batches still come in a fixed random order (the seed's): a validation
        # cut short by limit_val_batches then reads all lengths, not the shortest sequences only.
        g = g if self.shuffle else torch.Generator().manual_seed(self.seed)
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g)]
        total = self.batches_per_pass() * self.world
        batches = (batches * -(-total // len(batches)))[:total] if batches else []
        yield from batches[self.rank :: self.world]


def label_ids(values: np.ndarray | list, source: str) -> tuple[Tensor, list[str]]:
    """Labels of any type -> (int ids [N], names): numbers sort numerically, other names as text."""
    names = [str(v).strip() for v in np.asarray(values).reshape(-1).tolist()]
    unique = sorted(set(names), key=lambda s: (0, float(s), s) if _is_number(s) else (1, 0.0, s))
    if any(not _is_number(s) for s in unique) and any(_is_number(s) for s in unique):
        unique = sorted(set(names))
    ids = {name: i for i, name in enumerate(unique)}
    if not names:
        raise DataError(f"{source}: holds no labels.")
    return torch.tensor([ids[n] for n in names], dtype=torch.long), unique


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _as_is(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return batch

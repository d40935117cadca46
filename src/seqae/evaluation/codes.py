"""Getting the codes out: encode a split of a DataModule with a trained model, and load both from a run.

``encode_data`` is the one encode loop (``encode_split`` for scripts/encode.py, evaluation, the
embedding projector and the benchmark; ``seqae.Run.encode`` for arrays): inference mode, the data
read in chunks of whole batches, each batch's codes copied into a preallocated array (or a
memory-mapped ``.npy``, so memory stays flat however large the split is).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from seqae.data import rows
from seqae.data.datamodule import BatchSlices, SequenceData, SequenceDataModule
from seqae.errors import ConfigError, MissingFileError, instantiate
from seqae.runs.folder import RunFolder
from seqae.training.module import SequenceAutoencoder


def encode_split(
    model: SequenceAutoencoder,
    datamodule: SequenceDataModule,
    split: str = "test",
    out: str | Path | None = None,
    max_sequences: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Codes ``[N, code_size]`` float32 of one split (in the split's order) and its labels ``[N]`` or None.

    ``out``: write the codes to this ``.npy`` through a memory map instead of holding them in RAM.
    ``max_sequences``: encode only the first that many sequences of the split.
    """
    data = datamodule.split_data(split)
    n = len(data) if max_sequences is None else min(len(data), max_sequences)
    codes = encode_data(model, data, datamodule.batch_size, out, n, progress, f"encode {split}")
    labels = None if data.labels is None else data.labels[:n].numpy()
    return codes, labels


def encode_data(
    model: SequenceAutoencoder,
    data: SequenceData,
    batch_size: int,
    out: str | Path | None = None,
    n: int | None = None,
    progress: bool = False,
    desc: str = "encode",
) -> np.ndarray:
    """Codes ``[n, code_size]`` float32 of the first ``n`` sequences of ``data`` (all by default), in
    batches of ``batch_size``: the loop behind ``encode_split`` and ``seqae.Run.encode``."""
    n = len(data) if n is None else n
    shape = (n, model.code_size)
    codes = np.lib.format.open_memmap(out, "w+", np.float32, shape) if out else np.empty(shape, np.float32)
    device = next(model.parameters()).device
    # The split is read a chunk of whole batches at a time (one read, one normalisation, one copy to
    # the device and one back per chunk); the encoder runs batch by batch on views of the chunk, so
    # each batch is the one split_loader(split) gives, and a batch costs its forward and no more.
    row_bytes = 4 * math.prod(data.x.shape[1:])
    chunk = max(1, rows.CHUNK_BYTES // (row_bytes * batch_size)) * batch_size
    slices = BatchSlices(data)
    encode = model.encode_normalized  # looked up once
    was_training = model.training
    if was_training:  # switching walks every submodule: 0.1 ms, 0.4% of a seed-sized split
        model.eval()
    with torch.inference_mode(), _progress(n, progress, desc) as bar:
        for start in range(0, n, chunk):
            part = slices[start : min(start + chunk, n)]  # padding zeroed, as in the loaders
            x = model.normalize(part["x"].to(device, non_blocking=True))
            lengths = part.get("lengths")
            if lengths is None:
                batches = [(xb, None) for xb in x.split(batch_size)]
            else:  # each batch cut to its own longest sequence, as in the loaders; the longest is
                # read from the host's lengths, so a GPU is not waited for batch by batch
                batches = [
                    (xb[:, : int(lb.max())], lb.to(device, non_blocking=True))
                    for xb, lb in zip(x.split(batch_size), lengths.split(batch_size), strict=True)
                ]
            code = torch.cat([encode(xb, lb) for xb, lb in batches])
            codes[start : start + len(code)] = code.float().cpu().numpy()  # one host copy per chunk
            if bar is not None:
                bar.update(len(x))
    if was_training:
        model.train()
    if isinstance(codes, np.memmap):
        codes.flush()
    return codes


def write_encodings(
    model: SequenceAutoencoder, datamodule: SequenceDataModule, split: str, out: str | Path
) -> tuple[Path, Path | None]:
    """Write ``out`` (codes ``[N, code_size]`` float32) and, when the data has labels,
    ``<out stem>_labels.npy`` (int64 class ids ``[N]``) beside it. Returns both paths."""
    out = Path(out)
    if out.suffix != ".npy":
        raise ConfigError(
            f"out={out} must name a .npy file (the codes are written as one [N, code_size] array)."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    _, labels = encode_split(model, datamodule, split, out=out, progress=True)
    labels_path = None
    if labels is not None:
        labels_path = out.with_name(f"{out.stem}_labels.npy")
        np.save(labels_path, labels.astype(np.int64))
    return out, labels_path


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:  # not even a disabled tqdm: creating one costs 0.4% of a seed-sized encode
        return contextlib.nullcontext()
    from tqdm.auto import tqdm  # installed with lightning

    return tqdm(total=total, desc=desc, unit="seq", leave=False)


# -- a checkpoint and the data it was trained on ------------------------------------------------
def load_checkpoint_and_data(
    ckpt: str | Path | None, data: DictConfig | None, seed: int | None, device: str = "auto"
) -> tuple[SequenceAutoencoder, SequenceDataModule, Path]:
    """The model of ``ckpt`` and a set-up DataModule; also the folder results go to by default.

    ``data``: a data config (``data=<option>`` on the command line), or None / a partial config
    (``+data.<key>=<value>``) to use the data config of the checkpoint's run, read from
    ``<run>/.hydra/config.yaml`` (checkpoints live in ``<run>/checkpoints/``), with those keys changed.
    """
    ckpt = _checkpoint_path(ckpt)
    run = RunFolder.of(ckpt)
    run_dir = run.path
    data_cfg = _data_config(ckpt, run.config, data, seed)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SequenceAutoencoder.load(ckpt, map_location=device)
    datamodule = instantiate(data_cfg)
    datamodule.setup()
    if datamodule.num_features != model.hparams.input_size:
        raise ConfigError(
            f"The data has {datamodule.num_features} features per step but the checkpoint {ckpt} was "
            f"trained on {model.hparams.input_size}; pass data of the same kind (data=... / +data.<key>=...)."
        )
    return model, datamodule, run_dir


def _checkpoint_path(ckpt: str | Path | None) -> Path:
    if ckpt is None or str(ckpt) in ("", "???"):
        raise ConfigError(
            "ckpt=<path to a .ckpt file> is required, e.g. ckpt=outputs/train/runs/<run>/checkpoints/best.ckpt"
        )
    path = Path(ckpt).expanduser()
    if not path.is_file():
        raise MissingFileError(
            f"ckpt={ckpt}: no such checkpoint file. Checkpoints of a run are in "
            f"outputs/train/runs/<run>/checkpoints/ (best.ckpt, last.ckpt)."
        )
    return path


def _data_config(ckpt: Path, run_config: Path, data: DictConfig | None, seed: int | None) -> dict[str, Any]:
    """Resolve the data config: the chosen ``data=<option>``, or the run's own, changed by ``data``."""
    if data is not None and "_target_" in data:  # data=<option>: a complete data config
        root = OmegaConf.create({"seed": 42 if seed is None else seed, "data": data})
        if seed is None and run_config.is_file():  # the run's seed, so its splits come out the same
            root.seed = OmegaConf.load(run_config).get("seed", 42)
        return OmegaConf.to_container(root.data, resolve=True)
    if not run_config.is_file():
        raise MissingFileError(
            f"Cannot tell which data the checkpoint {ckpt} was trained on: {run_config} does not exist "
            f"(a checkpoint keeps its run's config there when it lives in <run>/checkpoints/). "
            f"Name the data instead, e.g. data=sines or data=ucr data.root=<dir> data.name=<Name>."
        )
    run = OmegaConf.load(run_config)
    if "data" not in run:
        raise ConfigError(f"{run_config} has no 'data' section; name the data with data=<option>.")
    if seed is not None:
        run.seed = seed
    OmegaConf.set_struct(run, True)  # a misspelled +data.<key> is an error, not a silent no-op
    try:
        if data:
            run.data = OmegaConf.merge(run.data, data)
    except Exception as e:
        raise ConfigError(
            f"Cannot change the run's data config ({run_config}) with {OmegaConf.to_container(data)}: {e}. "
            f"Its keys are: {sorted(run.data)}."
        ) from None
    return OmegaConf.to_container(run.data, resolve=True)

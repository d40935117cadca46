"""Getting the codes out: encode a split of a DataModule with a trained model, and load both from a run.

``encode_split`` is the one encode loop (scripts/encode.py, evaluation, the embedding projector and
the benchmark all use it): inference mode, batches straight from the DataModule's loader, each
batch's codes copied into a preallocated array (or a memory-mapped ``.npy``, so memory stays flat
however large the split is).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from seqae.data.datamodule import SequenceDataModule
from seqae.model import SequenceAutoencoder


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
    shape = (n, model.encoder.code_size)
    codes = np.lib.format.open_memmap(out, "w+", np.float32, shape) if out else np.empty(shape, np.float32)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = datamodule.split_loader(split)
    start = 0
    with torch.inference_mode():
        for batch in _progress(loader, progress, f"encode {split}"):
            if start >= n:
                break
            x = batch["x"].to(device, non_blocking=True)
            lengths = batch.get("lengths")
            if lengths is not None:
                lengths = lengths.to(device, non_blocking=True)
            code = model.encode(x, lengths)[: n - start]
            codes[start : start + len(code)] = code.float().cpu().numpy()  # the one host copy per batch
            start += len(code)
    model.train(was_training)
    if start != n:
        raise RuntimeError(f"encode_split: the {split} loader yielded {start} sequences, expected {n}.")
    if isinstance(codes, np.memmap):
        codes.flush()
    labels = None if data.labels is None else data.labels[:n].numpy()
    return codes, labels


def write_encodings(
    model: SequenceAutoencoder, datamodule: SequenceDataModule, split: str, out: str | Path
) -> tuple[Path, Path | None]:
    """Write ``out`` (codes ``[N, code_size]`` float32) and, when the data has labels,
    ``<out stem>_labels.npy`` (int64 class ids ``[N]``) beside it. Returns both paths."""
    out = Path(out)
    if out.suffix != ".npy":
        raise ValueError(
            f"out={out} must name a .npy file (the codes are written as one [N, code_size] array)."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    _, labels = encode_split(model, datamodule, split, out=out, progress=True)
    labels_path = None
    if labels is not None:
        labels_path = out.with_name(f"{out.stem}_labels.npy")
        np.save(labels_path, labels.astype(np.int64))
    return out, labels_path


def _progress(loader: DataLoader, enabled: bool, desc: str):
    if not enabled:
        return loader
    from tqdm.auto import tqdm  # installed with lightning

    return tqdm(loader, desc=desc, unit="batch", leave=False)


# -- a checkpoint and the data it was trained on ------------------------------------------------
def load_checkpoint_and_data(
    ckpt: str | Path | None, data: DictConfig | None, seed: int | None, device: str = "auto"
) -> tuple[SequenceAutoencoder, SequenceDataModule, Path]:
    """The model of ``ckpt`` and a set-up DataModule; also the folder results go to by default.

    ``data``: a data config (``data=<option>`` on the command line), or None / a partial config
    (``+data.<key>=<value>``) to use the data config of the checkpoint's run, read from
    ``<run>/.hydra/config.yaml`` (checkpoints live in ``<run>/checkpoints/``), with those keys changed.
    """
    from hydra.utils import instantiate

    ckpt = _checkpoint_path(ckpt)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    data_cfg = _data_config(ckpt, run_dir / ".hydra" / "config.yaml", data, seed)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SequenceAutoencoder.load_from_checkpoint(ckpt, map_location=device, weights_only=True)
    datamodule = instantiate(data_cfg)
    datamodule.setup()
    if datamodule.num_features != model.hparams.input_size:
        raise ValueError(
            f"The data has {datamodule.num_features} features per step but the checkpoint {ckpt} was "
            f"trained on {model.hparams.input_size}; pass data of the same kind (data=... / +data.<key>=...)."
        )
    return model, datamodule, run_dir


def _checkpoint_path(ckpt: str | Path | None) -> Path:
    if ckpt is None or str(ckpt) in ("", "???"):
        raise ValueError(
            "ckpt=<path to a .ckpt file> is required, e.g. ckpt=outputs/train/runs/<run>/checkpoints/best.ckpt"
        )
    path = Path(ckpt).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
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
        raise FileNotFoundError(
            f"Cannot tell which data the checkpoint {ckpt} was trained on: {run_config} does not exist "
            f"(a checkpoint keeps its run's config there when it lives in <run>/checkpoints/). "
            f"Name the data instead, e.g. data=sines or data=ucr data.root=<dir> data.name=<Name>."
        )
    run = OmegaConf.load(run_config)
    if "data" not in run:
        raise ValueError(f"{run_config} has no 'data' section; name the data with data=<option>.")
    if seed is not None:
        run.seed = seed
    OmegaConf.set_struct(run, True)  # a misspelled +data.<key> is an error, not a silent no-op
    try:
        if data:
            run.data = OmegaConf.merge(run.data, data)
    except Exception as e:
        raise ValueError(
            f"Cannot change the run's data config ({run_config}) with {OmegaConf.to_container(data)}: {e}. "
            f"Its keys are: {sorted(run.data)}."
        ) from None
    return OmegaConf.to_container(run.data, resolve=True)

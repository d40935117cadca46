"""Checkpoints that are safe to load, safe to write, and honest about what they hold.

- Reading uses ``weights_only=True``: a checkpoint holds tensors and plain containers, so loading
  one cannot run code. Every failure names the file and what is wrong with it.
- Writing goes to a temporary file in the same folder, then ``os.replace``: a kill during a save
  leaves the previous checkpoint intact, never a truncated one.
- The RNG states (torch, numpy, python) travel in the checkpoint, so a resumed run draws the same
  random numbers as one that was never interrupted.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from seqae.errors import CheckpointError
from seqae.models.autoencoder import DECODER, ENCODER


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a seqae checkpoint's contents (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist (expected a .ckpt file written by seqae).")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, or objects that would need unpickling code
        raise CheckpointError(
            f"Checkpoint {path} cannot be read as a safe (weights_only) torch checkpoint: it is truncated, "
            f"corrupt, or holds arbitrary Python objects. ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    missing = [k for k in ("state_dict", "hyper_parameters") if k not in ckpt]
    if not isinstance(ckpt, dict) or missing:
        raise CheckpointError(
            f"Checkpoint {path} was not written by seqae's SequenceAutoencoder: it lacks {missing or 'a dict'}."
        )
    return ckpt


def check_matches(path: str | Path, ckpt: dict[str, Any], model: torch.nn.Module) -> None:
    """Fail, naming every differing tensor, if the checkpoint's weights do not fit ``model``."""
    ours = model.state_dict()
    theirs = ckpt["state_dict"]
    problems = [f"{k}: missing from the checkpoint" for k in ours if k not in theirs]
    problems += [f"{k}: not in this model" for k in theirs if k not in ours]
    problems += [
        f"{k}: checkpoint {tuple(theirs[k].shape)} vs config {tuple(v.shape)}"
        for k, v in ours.items()
        if k in theirs and tuple(theirs[k].shape) != tuple(v.shape)
    ]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        hparams = ckpt["hyper_parameters"]
        saved = {k: hparams.get(k) for k in ("encoder", "decoder")} | earlier_specs(hparams)
        raise CheckpointError(
            f"Checkpoint {path} does not match the model this config builds ({shown}). The checkpoint "
            f"was trained with {saved}; use the same model settings, or start a fresh run without ckpt_path."
        )


# Objectives by the name that checkpoints written before modules were named by _target_ hold.
EARLIER_OBJECTIVES = {
    "reconstruction": "reconstruction.Reconstruction",
    "contrastive": "contrastive.Contrastive",
    "denoising": "denoising.Denoising",
    "fake_samples": "fake_samples.FakeSamples",
}


def earlier_specs(hparams: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``encoder``, ``decoder`` and ``objective`` specs of a checkpoint written before seqae's
    own modules were named by ``_target_`` (its recurrent encoder and decoder were set by
    ``hidden_size``, ``num_layers``, ``readout``, ...; its decoder and objective by name), so such a
    run loads and encodes as it did. Nothing for a checkpoint of today's form."""
    if "hidden_size" not in hparams:
        return {}
    shared = {k: hparams.get(k, v) for k, v in (("hidden_size", 64), ("num_layers", 1), ("cell", "lstm"))}
    encoder = hparams.get("encoder") or {
        **ENCODER,
        **shared,
        **{
            k: hparams.get(k, v)
            for k, v in (("readout", "hidden"), ("bidirectional", False), ("dropout", 0.0))
        },
        "latent_size": hparams.get("latent_size"),
    }
    decoder = hparams.get("decoder", "repeat")
    if decoder == "repeat":
        projection = hparams.get("decoder_input_size")
        decoder = {**DECODER, **shared, "projection_size": projection}
    elif decoder == "autoregressive":
        decoder = {"_target_": "seqae.models.decoders.AutoregressiveDecoder", **shared}
    objective = hparams.get("objective", "reconstruction")
    if isinstance(objective, str):
        target = f"seqae.models.objectives.{EARLIER_OBJECTIVES[objective]}"
        objective = {"_target_": target, **(hparams.get("objective_args") or {})}
    return {"encoder": encoder, "decoder": decoder, "objective": objective}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but a kill mid-save never truncates the previous file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def rng_states() -> dict[str, Any]:
    """Every RNG a training step may draw from, as tensors and plain containers (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))

"""The one OmegaConf resolver seqae's configs use; imported by ``seqae`` itself, so every entry point has it."""

from __future__ import annotations

from omegaconf import OmegaConf

GPU_ACCELERATORS = ("gpu", "cuda")


def gpus_per_node(accelerator: str, devices: int | str) -> int | str | None:
    """GPUs a SLURM job asks for on each node: one per device on a GPU run, none otherwise, so a CPU
    partition (which rejects ``--gpus-per-node``) takes a ``trainer=ddp_cpu`` job as it is."""
    return devices if str(accelerator) in GPU_ACCELERATORS else None


OmegaConf.register_new_resolver("seqae.gpus_per_node", gpus_per_node, replace=True)

"""Train a sequence autoencoder: ``seqae-train encoder=stacked readout=cell`` (or ``python train.py ...``).

Configs ship in the package (``seqae/conf/``; ``seqae-train --help`` lists the groups); outputs land in
``outputs/train/runs/<timestamp>/`` under the working directory (sweeps:
``outputs/train/multiruns/<timestamp>/<job>/``).
"""

import sys

import hydra
from omegaconf import DictConfig

from seqae.runs.resume import rewrite_argv
from seqae.startup import frozen_imports


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def train(cfg: DictConfig) -> float | None:
    # Imported here so that a bad override fails before torch and Lightning are loaded; without the
    # garbage collector's scans on the way (0.8 s of start-up, see seqae/startup.py).
    with frozen_imports():
        from seqae.train import optimized_metric
        from seqae.train import train as train_task

    return optimized_metric(cfg, train_task(cfg))


def main() -> None:
    sys.argv = rewrite_argv(sys.argv)  # resume=<run folder> -> that run's overrides + its last.ckpt
    train()


if __name__ == "__main__":
    main()

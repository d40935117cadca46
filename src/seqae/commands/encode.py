"""Export the codes of a trained model: ``seqae-encode ckpt=<run>/checkpoints/best.ckpt``.

Writes ``[N, code_size]`` float32 codes of one split (``split=train|val|test|all``) to ``out=<file.npy>``
(default ``<run>/codes_<split>.npy``) and, when the data has labels, their class ids to
``<out stem>_labels.npy``. Settings: seqae/conf/encode.yaml.
"""

import logging

import hydra
from omegaconf import DictConfig

from seqae.startup import frozen_imports

log = logging.getLogger("encode")


@hydra.main(version_base="1.3", config_path="../conf", config_name="encode")
def main(cfg: DictConfig) -> None:
    # Imported here so that a bad override fails before torch and Lightning are loaded (and without
    # the garbage collector's scans on the way: seqae/startup.py).
    with frozen_imports():
        from seqae.evaluation.codes import load_checkpoint_and_data, write_encodings
        from seqae.runs.console import tidy_console

    tidy_console()
    model, datamodule, run_dir = load_checkpoint_and_data(cfg.ckpt, cfg.get("data"), cfg.seed, cfg.device)
    n = len(datamodule.split_data(cfg.split))  # a bad split name fails before anything is written
    out = cfg.out or run_dir / f"codes_{cfg.split}.npy"
    codes_path, labels_path = write_encodings(model, datamodule, cfg.split, out)
    log.info(
        "Encoded the %s split: %d codes of size %d -> %s%s",
        cfg.split,
        n,
        model.code_size,
        codes_path,
        f", labels -> {labels_path}" if labels_path else " (the data has no labels)",
    )


if __name__ == "__main__":
    main()

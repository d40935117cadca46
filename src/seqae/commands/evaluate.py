"""Downstream evaluation of a trained model: ``seqae-evaluate ckpt=<run>/checkpoints/best.ckpt``.

Prints and writes ``eval.json`` (default: the checkpoint's run folder, beside ``metrics.json``):
test reconstruction MSE/MAE, linear-probe and 1-NN accuracy of the codes when the data has labels,
and the anomaly AUROC of per-sequence reconstruction error with ``eval.anomaly_label=<class>``.
Settings: seqae/conf/evaluate.yaml and seqae/conf/eval/default.yaml.
"""

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from seqae.runs.folder import RunFolder
from seqae.startup import frozen_imports

log = logging.getLogger("evaluate")


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    # Imported here so that a bad override fails before torch and Lightning are loaded (and without
    # the garbage collector's scans on the way: seqae/startup.py).
    with frozen_imports():
        from seqae.evaluation.codes import load_checkpoint_and_data
        from seqae.evaluation.probes import evaluate, evaluate_config, write_eval_json
        from seqae.runs.console import tidy_console

    tidy_console()
    model, datamodule, run_dir = load_checkpoint_and_data(cfg.ckpt, cfg.get("data"), cfg.seed, cfg.device)
    results = evaluate(model, datamodule, **evaluate_config(cfg.eval))
    out = Path(cfg.out) if cfg.out else RunFolder(run_dir).evaluation
    write_eval_json(out, results, cfg.ckpt, train_split=cfg.eval.train_split, test_split=cfg.eval.test_split)
    print(json.dumps(results, indent=2))
    log.info("Wrote %s", out)


if __name__ == "__main__":
    main()

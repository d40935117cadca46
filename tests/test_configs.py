"""Every option of every config group composes and instantiates (no training here)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from seqae.errors import ConfigError
from seqae.train import build_model, instantiate_each, module_specs
from seqae.training.module import SequenceAutoencoder
from tests.conftest import CONF, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def is_valid(encoder: str, readout: str) -> bool:
    return not (encoder == "gru" and readout in ("cell", "both"))  # a GRU has no cell state


RECURRENT = [e for e in options("encoder") if e != "dilated"]  # the ones the readout group reads


@pytest.mark.parametrize("encoder", RECURRENT)
@pytest.mark.parametrize("readout", options("readout"))
@pytest.mark.parametrize("decoder", options("decoder"))
def test_every_valid_combination_trains_and_loads_from_its_checkpoint(
    tiny_cfg, tmp_path, encoder, readout, decoder
):
    cfg = tiny_cfg(f"encoder={encoder}", f"readout={readout}", f"decoder={decoder}", "encoder.latent_size=5")
    if not is_valid(encoder, readout):
        with pytest.raises(ConfigError, match=f"readout='{readout}' needs a cell state"):
            build_model(cfg, 3)
        return
    model = build_model(cfg, 3)
    assert model.hparams.encoder["readout"] == readout and model.hparams.decoder["_target_"].endswith(
        {"repeat": "RepeatDecoder", "autoregressive": "AutoregressiveDecoder"}[decoder]
    )
    dm = instantiate(cfg.data)
    trainer = L.Trainer(
        fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit(model, datamodule=dm)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = SequenceAutoencoder.load(path).eval()
    x = dm.splits["test"].x[:4]
    with torch.no_grad():
        assert loaded.encode(x).shape == (4, 5 + 2 * 3)  # the projection; each series' mean and log std
        torch.testing.assert_close(loaded(x), model.eval()(x))


@pytest.mark.parametrize(
    "group", ["data", "model", "objective", "trainer", "logger", "callbacks", "debug", "experiment"]
)
def test_every_option_of_every_group_instantiates(tiny_cfg, group):
    for option in options(group):
        if group == "data" and option != "sines":
            continue  # TINY's keys are sines' own; the file sources are composed in tests/data/test_data_configs.py
        cfg = tiny_cfg(f"{group}={option}")
        dm = instantiate(cfg.data)
        if (group, option) == ("objective", "hierarchical"):  # per-step outputs: not the LSTM's
            with pytest.raises(ConfigError, match=r"has no steps.*encoder=dilated"):
                build_model(tiny_cfg(f"{group}={option}", "encoder=single"), 3)
        build_model(cfg, 3)
        callbacks, loggers = instantiate_each(cfg.get("callbacks")), instantiate_each(cfg.get("logger"))
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        assert all(any(c is t for t in trainer.callbacks) for c in callbacks)
        assert len(trainer.loggers) == len(loggers) or trainer.fast_dev_run
        assert dm.batch_size == cfg.data.batch_size


@pytest.mark.parametrize("group", ["encoder", "decoder", "objective"])
def test_seqaes_own_modules_are_chosen_as_a_researchers_are_by_target(tiny_cfg, group):
    for option in options(group):
        spec = module_specs(tiny_cfg(f"{group}={option}"))[group]
        assert spec["_target_"].startswith("seqae.models.")  # e.g. seqae.models.encoders.RecurrentEncoder
        assert "# @package model" not in (CONF / group / f"{option}.yaml").read_text()


@pytest.mark.parametrize("objective", options("objective"))
def test_every_objective_trains_with_patches_and_instance_norm_and_loads_from_its_checkpoint(
    tiny_cfg, tmp_path, objective
):
    # the hierarchical contrast reads per-step outputs, which only the default convolutional encoder
    # gives; the others train here with the LSTM, which reads the series in patches
    encoder = [] if objective == "hierarchical" else ["encoder=single"]
    cfg = tiny_cfg(
        f"objective={objective}",
        "model.instance_norm=true",
        "model.max_recurrent_steps=4",
        "data.seq_len=13",
        *encoder,
    )
    dm = instantiate(cfg.data)
    dm.setup()
    model = build_model(cfg, 3, dm.sequence_length)
    assert model.patch_size == 4  # 13 steps: 4 patches, the last short
    assert model.hparams.objective["_target_"].startswith(f"seqae.models.objectives.{objective}.")
    trainer = L.Trainer(
        fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = SequenceAutoencoder.load(path).eval()
    x = dm.splits["test"].x[:4]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))


def test_stacked_cell_is_what_the_readme_says(tiny_cfg):
    cfg = tiny_cfg("encoder=stacked", "readout=cell")
    assert (cfg.encoder.num_layers, cfg.encoder.readout) == (2, "cell")
    assert (cfg.decoder.num_layers, cfg.decoder._target_) == (2, "seqae.models.decoders.RepeatDecoder")


def recipe(cfg) -> tuple:
    return (
        cfg.objective._target_.rsplit(".", 1)[-1],
        cfg.model.lr,
        cfg.model.conv_channels,
        cfg.data.batch_size,
        cfg.trainer.max_steps,
        cfg.trainer.val_check_interval,
    )


def test_the_default_encoder_brings_its_recipe_a_recurrent_one_the_lstm_recipe_and_a_given_key_wins(tmp_path):
    def compose(*overrides: str):
        return compose_config(list(overrides), tmp_path / "run")

    default = compose()
    assert default.encoder._target_ == "seqae.models.convolutional.DilatedConvEncoder"
    assert default.encoder.zero_init_residual is True
    assert recipe(default) == ("HierarchicalContrast", 0.001, None, 8, 200, 200)
    for encoder in RECURRENT:  # python train.py encoder=stacked readout=cell: the LSTM's own recipe
        assert recipe(compose(f"encoder={encoder}")) == ("Denoising", 0.003, 32, 32, 1500, 150)
    mine = compose("objective=denoising", "model.lr=0.01", "data.batch_size=16", "trainer.max_steps=50")
    assert default.encoder == mine.encoder
    assert recipe(mine) == ("Denoising", 0.01, None, 16, 50, 200)


def test_outputs_land_under_outputs_with_sub_second_timestamps(tiny_cfg):
    cfg = tiny_cfg()
    import re

    assert re.fullmatch(r"outputs/train/runs/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{6}", cfg.hydra.run.dir)
    assert cfg.hydra.sweep.dir.startswith("outputs/train/multiruns/")
    assert cfg.callbacks.model_checkpoint.dirpath.endswith("/checkpoints")

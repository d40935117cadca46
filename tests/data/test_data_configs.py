"""conf/data/arrays.yaml and ucr.yaml compose, name their required keys, and instantiate."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf.errors import MissingMandatoryValue

from seqae.data import ArraysDataModule, UCRDataModule
from tests.conftest import TINY, compose_config

MODEL = [o for o in TINY if not o.startswith("data.")]


@pytest.mark.parametrize(
    ("overrides", "cls"),
    [
        (["data=arrays", "data.path=x.npy", "data.window=16", "data.stride=4"], ArraysDataModule),
        (["data=ucr", "data.root=archive", "data.name=GunPoint"], UCRDataModule),
    ],
)
def test_file_sources_compose_and_instantiate(tmp_path, overrides, cls):
    cfg = compose_config([*MODEL, *overrides], tmp_path / "run")
    dm = instantiate(cfg.data)
    # the default encoder (dilated) trains on batches of 8, whatever the data's own default
    assert isinstance(dm, cls) and dm.batch_size == 8 and dm.seed == cfg.seed and dm.label_names is None


@pytest.mark.parametrize(("option", "key"), [("arrays", "path"), ("ucr", "root")])
def test_a_missing_required_key_is_named(tmp_path, option, key):
    cfg = compose_config([*MODEL, f"data={option}"], tmp_path / "run")
    with pytest.raises(MissingMandatoryValue, match=f"data.{key}"):
        instantiate(cfg.data)


def test_sines_keys_do_not_apply_to_file_sources(tmp_path):
    with pytest.raises(ConfigCompositionException, match=r"data\.num_sequences"):
        compose_config(["data=arrays", "data.path=x.npy", "data.num_sequences=3"], tmp_path / "run")

"""A researcher's own encoder, decoder and objective, in a package outside seqae, chosen by YAMLs in
their own config folder: it trains from the CLI, reloads in a new process, and nothing but an
nn.Module is ever built from a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from seqae.errors import ConfigError
from seqae.models.targets import build
from seqae.train import compose_config, module_specs
from seqae.training.module import SequenceAutoencoder
from tests.conftest import ROOT, TINY, recurrent

DOCS = ROOT / "docs" / "models.md"
# The worked example of docs/models.md ("Your own modules"): its package, as a user would paste it.
MYLAB = DOCS.read_text().split("## Your own modules")[1].split("```python\n")[1].split("```")[0]


def write_package(root: Path) -> tuple[Path, Path]:
    """``mylab`` (its modules) and ``myconf`` (one YAML per module, no @package line)."""
    (root / "src" / "mylab").mkdir(parents=True)
    (root / "src" / "mylab" / "__init__.py").write_text(MYLAB)
    conf = root / "myconf"
    for group, text in {
        "encoder/conv": "_target_: mylab.ConvEncoder\nchannels: 12\n",
        "decoder/linear": "_target_: mylab.LinearDecoder\n",
        "objective/jitter": "_target_: mylab.Jitter\nsigma: 0.05\n",
    }.items():
        (conf / group).parent.mkdir(parents=True, exist_ok=True)
        (conf / f"{group}.yaml").write_text(text)
    return root / "src", conf


def run(*command: str, pythonpath: Path, cwd: Path) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")]))  # theirs first
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_their_encoder_decoder_and_objective_train_from_their_yaml_and_reload_in_a_new_process(tmp_path):
    src, conf = write_package(tmp_path)
    run_dir = tmp_path / "run"
    choose = [f"hydra.searchpath=[file://{conf}]", "encoder=conv", "decoder=linear", "objective=jitter"]
    proc = run(
        sys.executable,
        str(ROOT / "train.py"),
        *[o for o in TINY if not o.startswith("encoder.")],  # their encoder has no hidden_size
        *choose,
        f"hydra.run.dir={run_dir}",
        pythonpath=src,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 8 and metrics["encoder"] == "conv" and metrics["objective"] == "jitter"

    reload = textwrap.dedent(
        f"""
        import numpy as np, seqae
        run = seqae.load({str(run_dir)!r})
        model = run.model
        assert type(model.encoder).__module__ == "mylab" and type(model.decoder).__name__ == "LinearDecoder"
        assert type(model.objective).__name__ == "Jitter" and model.objective.sigma == 0.05
        codes = run.encode(np.random.default_rng(0).normal(size=(5, 12, 3)))
        assert codes.shape == (5, 12 + 2 * 3), codes.shape  # their 12 channels and each series' level and scale
        """
    )
    proc = run(sys.executable, "-c", reload, pythonpath=src, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    proc = run(
        sys.executable, str(ROOT / "scripts" / "encode.py"), f"ckpt={ckpt}", pythonpath=src, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    # Without their package the run names what is missing, in one paragraph.
    proc = run(
        sys.executable, str(ROOT / "scripts" / "encode.py"), f"ckpt={ckpt}", pythonpath=tmp_path, cwd=tmp_path
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "encoder._target_='mylab.ConvEncoder': the module 'mylab' cannot be imported" in proc.stderr


def test_their_encoder_gets_seqaes_decoder_at_its_defaults_and_no_readout(tmp_path):
    _, conf = write_package(tmp_path)
    overrides = [o for o in TINY if not o.startswith("encoder.")]
    cfg = compose_config([*overrides, f"hydra.searchpath=[file://{conf}]", "encoder=conv"], tmp_path / "run")
    specs = module_specs(cfg)
    assert specs["encoder"] == {"_target_": "mylab.ConvEncoder", "channels": 12}  # nothing of seqae's added
    assert specs["decoder"] == {
        "_target_": "seqae.models.decoders.RepeatDecoder",
        "hidden_size": 64,
        "num_layers": 1,
        "cell": "lstm",
        "projection_size": 64,
    }
    # A readout is an option of seqae's recurrent encoder: theirs has none to override.
    with pytest.raises(ConfigCompositionException, match="Could not override 'readout'"):
        compose_config([*overrides, f"hydra.searchpath=[file://{conf}]", "encoder=conv", "readout=cell"])


class WritesAFile:
    """Not a module: building it from a run must never run its constructor."""

    def __init__(self, path: str, **kwargs) -> None:
        Path(path).write_text("called")


def test_a_target_that_is_not_a_module_is_refused_before_it_is_called(tmp_path):
    marker = tmp_path / "called.txt"
    spec = {"_target_": f"{__name__}.WritesAFile", "path": str(marker)}
    with pytest.raises(ConfigError, match=r"is not a torch.nn.Module subclass"):
        build(spec, "encoder", input_size=3)
    model = SequenceAutoencoder(input_size=3, **recurrent(4))
    ckpt = tmp_path / "tampered.ckpt"
    hparams = dict(model.hparams) | {"encoder": spec}
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": "2.6.6"},
        ckpt,
    )
    with pytest.raises(ConfigError, match=r"WritesAFile' is not a torch.nn.Module subclass"):
        SequenceAutoencoder.load_from_checkpoint(ckpt, weights_only=True)
    assert not marker.exists()
    with pytest.raises(ConfigError, match=r"the module 'nolab' cannot be imported"):
        build({"_target_": "nolab.Encoder"}, "encoder", input_size=3)


# What a checkpoint written before this form holds (train.py encoder=stacked readout=cell decoder=autoregressive
# objective=denoising model.hidden_size=4 ...): before seqae's own modules were named by _target_.
EARLIER = {
    "input_size": 3,
    "hidden_size": 4,
    "num_layers": 2,
    "readout": "cell",
    "cell": "lstm",
    "bidirectional": False,
    "dropout": 0.0,
    "latent_size": 5,
    "decoder": "autoregressive",
    "decoder_input_size": 64,
    "reverse_target": True,
    "lr": 0.003,
    "weight_decay": 0.0,
    "scheduler": "cosine",
    "steps_per_call": 40,
    "gradient_clip_val": 5.0,
    "instance_norm": True,
    "sequence_length": 40,
    "max_recurrent_steps": 10,
    "objective": "denoising",
    "objective_args": {"mask": 0.3, "noise": 0.0},
    "encoder": None,
    "conv_channels": None,
}


def test_a_checkpoint_of_an_earlier_seqae_loads_and_encodes_as_the_same_model(tmp_path):
    specs = {
        "encoder": {"_target_": "seqae.models.encoders.RecurrentEncoder", "hidden_size": 4, "num_layers": 2}
        | {"readout": "cell", "latent_size": 5},
        "decoder": {
            "_target_": "seqae.models.decoders.AutoregressiveDecoder",
            "hidden_size": 4,
            "num_layers": 2,
        },
        "objective": {"_target_": "seqae.models.objectives.denoising.Denoising", "mask": 0.3},
    }
    today = {k: v for k, v in EARLIER.items() if k in SequenceAutoencoder.__init__.__code__.co_varnames}
    model = SequenceAutoencoder(**today | specs).eval()
    ckpt = tmp_path / "earlier.ckpt"
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": EARLIER, "pytorch-lightning_version": "2.6.6"},
        ckpt,
    )
    loaded = SequenceAutoencoder.load(ckpt).eval()
    assert type(loaded.decoder).__name__ == "AutoregressiveDecoder" and loaded.objective.mask == 0.3
    assert loaded.hparams.encoder["readout"] == "cell" and loaded.patch_size == 4
    x = torch.randn(2, 40, 3)
    assert torch.equal(loaded.encode(x), model.encode(x))

"""The encode path: codes in the split's order, memory-mapped output, and loading a run's checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from seqae.data import SequenceData, SequenceDataModule, SinesDataModule, rows
from seqae.evaluation.codes import encode_split, load_checkpoint_and_data, write_encodings
from seqae.training.module import SequenceAutoencoder
from tests.conftest import needs_cuda, quiet_trainer, recurrent


class VariableLengthData(SequenceDataModule):
    """Sequences of 3..12 steps, zero-padded, labelled by parity of their length."""

    def load(self) -> SequenceData:
        g = torch.Generator().manual_seed(0)
        lengths = torch.randint(3, 13, (40,), generator=g)
        x = torch.randn(40, 12, 2, generator=g) * (torch.arange(12) < lengths[:, None]).unsqueeze(-1)
        return SequenceData(x, lengths, labels=lengths % 2)


def sines(**kwargs) -> SinesDataModule:
    args = dict(num_sequences=50, seq_len=10, num_features=3, batch_size=8, seed=0) | kwargs
    return SinesDataModule(**args)


def model_for(dm: SequenceDataModule, readout: str = "hidden") -> SequenceAutoencoder:
    torch.manual_seed(0)
    dm.setup()
    model = SequenceAutoencoder(dm.num_features, **recurrent(6, readout=readout))
    model.set_normalization(*dm.normalization())
    return model


@pytest.mark.parametrize("split", ["train", "val", "test", "all"])
def test_codes_are_the_models_codes_of_the_split_in_its_order(split):
    dm = sines()
    model = model_for(dm, readout="cell")
    codes, labels = encode_split(model, dm, split)
    data = dm.split_data(split)
    assert codes.dtype == np.float32 and codes.shape == (len(data), model.code_size)
    with torch.no_grad():
        expected = model.encode(data.x).numpy()
    np.testing.assert_allclose(codes, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, data.labels.numpy())


@needs_cuda
def test_codes_on_a_gpu_match_codes_on_the_cpu():
    dm = VariableLengthData(batch_size=16, seed=0)  # packed sequences on cuDNN too
    model = model_for(dm, readout="cell")
    cpu_codes, _ = encode_split(model, dm, "all")
    gpu_codes, _ = encode_split(model.cuda(), dm, "all")
    np.testing.assert_allclose(gpu_codes, cpu_codes, rtol=1e-3, atol=1e-4)


def test_variable_length_codes_match_each_sequence_encoded_alone():
    dm = VariableLengthData(batch_size=16, seed=0)
    model = model_for(dm)
    codes, labels = encode_split(model, dm, "all")
    data = dm.split_data("all")
    with torch.no_grad():
        alone = [model.encode(data.x[i : i + 1, : data.lengths[i]]) for i in range(len(data))]
    np.testing.assert_allclose(codes, torch.cat(alone).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, (data.lengths % 2).numpy())


@pytest.mark.parametrize("make", [sines, lambda: VariableLengthData(batch_size=16, seed=0)])
def test_codes_do_not_depend_on_how_many_chunks_the_split_is_read_in(make, monkeypatch):
    dm = make()
    model = model_for(dm, readout="both")
    one_chunk, _ = encode_split(model, dm, "all")
    row_bytes = 4 * int(np.prod(dm.split_data("all").x.shape[1:]))
    monkeypatch.setattr(rows, "CHUNK_BYTES", row_bytes * dm.batch_size)  # one batch per chunk
    many_chunks, _ = encode_split(model, dm, "all", max_sequences=len(dm.split_data("all")) - 3)
    np.testing.assert_array_equal(many_chunks, one_chunk[: len(many_chunks)])


def test_codes_go_to_a_memory_mapped_npy_and_labels_beside_it(tmp_path):
    dm = sines()
    model = model_for(dm)
    in_memory, _ = encode_split(model, dm, "test")
    model.train()
    codes_path, labels_path = write_encodings(model, dm, "test", tmp_path / "out" / "codes.npy")
    assert model.training  # encoding leaves the model's mode as it found it
    assert labels_path == tmp_path / "out" / "codes_labels.npy"
    np.testing.assert_array_equal(np.load(codes_path), in_memory)
    np.testing.assert_array_equal(np.load(labels_path), dm.split_data("test").labels.numpy())
    assert np.load(labels_path).dtype == np.int64


def test_unlabelled_data_writes_no_labels_file(tmp_path):
    class Unlabelled(SequenceDataModule):
        def load(self) -> SequenceData:
            return SequenceData(torch.randn(20, 5, 2))

    dm = Unlabelled(batch_size=4)
    _, labels_path = write_encodings(model_for(dm), dm, "all", tmp_path / "codes.npy")
    assert labels_path is None and not (tmp_path / "codes_labels.npy").exists()
    assert np.load(tmp_path / "codes.npy").shape == (20, 6)


def test_a_progress_bar_only_when_asked_for(tmp_path, capsys):
    dm = sines()
    model = model_for(dm)
    encode_split(model, dm, "test")  # evaluation and the projector encode quietly
    assert "encode test" not in capsys.readouterr().err
    write_encodings(model, dm, "test", tmp_path / "codes.npy")  # scripts/encode.py shows its progress
    err = capsys.readouterr().err  # counted in sequences: "0/5 [..., ?seq/s]"
    assert "encode test" in err and f"/{len(dm.split_data('test'))} [" in err and "seq/s" in err


def test_max_sequences_encodes_only_the_first_ones():
    dm = sines()
    model = model_for(dm)
    full, full_labels = encode_split(model, dm, "train")
    part, part_labels = encode_split(model, dm, "train", max_sequences=11)
    np.testing.assert_array_equal(part, full[:11])
    np.testing.assert_array_equal(part_labels, full_labels[:11])


def test_bad_split_and_bad_out_are_refused(tmp_path):
    dm = sines()
    model = model_for(dm)
    with pytest.raises(ValueError, match="split must be one of"):
        encode_split(model, dm, "validation")
    with pytest.raises(ValueError, match=r"must name a \.npy file"):
        write_encodings(model, dm, "test", tmp_path / "codes.csv")


# -- loading a checkpoint and the data of its run -----------------------------------------------
@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder as train.py leaves it: <run>/checkpoints/best.ckpt and <run>/.hydra/config.yaml."""
    run = tmp_path / "run"
    data_cfg = {
        "_target_": "seqae.data.SinesDataModule",
        "num_sequences": 40,
        "seq_len": 8,
        "num_features": 2,
        "batch_size": 8,
        "seed": "${seed}",
    }
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"seed": 3, "data": data_cfg}), run / ".hydra" / "config.yaml")
    dm = SinesDataModule(num_sequences=40, seq_len=8, num_features=2, batch_size=8, seed=3)
    trainer = quiet_trainer(tmp_path, max_steps=1, enable_checkpointing=False)
    trainer.fit(model_for(dm), datamodule=dm)
    trainer.save_checkpoint(run / "checkpoints" / "best.ckpt")
    return run


def test_a_checkpoint_comes_back_with_the_data_and_seed_of_its_run(run_dir):
    model, dm, folder = load_checkpoint_and_data(run_dir / "checkpoints" / "best.ckpt", None, None, "cpu")
    assert folder == run_dir
    assert (dm.num_sequences, dm.seq_len, dm.seed) == (40, 8, 3)  # the run's seed: the same splits
    assert dm.num_features == model.hparams.input_size == 2


def test_the_runs_data_can_be_changed_key_by_key(run_dir):
    changes = OmegaConf.create({"batch_size": 5})  # +data.batch_size=5
    _, dm, _ = load_checkpoint_and_data(run_dir / "checkpoints" / "best.ckpt", changes, None, "cpu")
    assert (dm.batch_size, dm.num_sequences) == (5, 40)
    with pytest.raises(ValueError, match="batchsize") as error:
        bad = OmegaConf.create({"batchsize": 5})
        load_checkpoint_and_data(run_dir / "checkpoints" / "best.ckpt", bad, None, "cpu")
    assert "config.yaml" in str(error.value) and "batch_size" in str(error.value)


def test_named_data_replaces_the_runs_data(run_dir):
    other = OmegaConf.create(
        {"_target_": "seqae.data.SinesDataModule", "num_sequences": 30, "num_features": 2, "seed": "${seed}"}
    )
    _, dm, _ = load_checkpoint_and_data(run_dir / "checkpoints" / "best.ckpt", other, None, "cpu")
    assert (dm.num_sequences, dm.seed) == (30, 3)


def test_missing_checkpoint_is_named():
    with pytest.raises(FileNotFoundError, match=r"nowhere\.ckpt: no such checkpoint file"):
        load_checkpoint_and_data("nowhere.ckpt", None, None, "cpu")
    with pytest.raises(ValueError, match=r"ckpt=<path to a \.ckpt file> is required"):
        load_checkpoint_and_data(None, None, None, "cpu")


def test_a_checkpoint_outside_a_run_needs_named_data(run_dir, tmp_path):
    loose = tmp_path / "loose.ckpt"
    loose.write_bytes((run_dir / "checkpoints" / "best.ckpt").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"Cannot tell which data.*Name the data instead"):
        load_checkpoint_and_data(loose, None, None, "cpu")


def test_data_with_another_feature_count_is_refused(run_dir):
    other = OmegaConf.create(
        {"_target_": "seqae.data.SinesDataModule", "num_sequences": 30, "num_features": 5}
    )
    with pytest.raises(ValueError, match=r"5 features per step .* trained on 2"):
        load_checkpoint_and_data(run_dir / "checkpoints" / "best.ckpt", other, 0, "cpu")

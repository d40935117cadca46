from __future__ import annotations

import lightning as L
import pytest
import torch

from seqae.data import SinesDataModule
from seqae.model import SequenceAutoencoder, masked_mse, reverse_valid_steps


def tiny_data(**kwargs) -> SinesDataModule:
    args = dict(num_sequences=96, seq_len=12, num_features=3, batch_size=16)
    return SinesDataModule(**{**args, **kwargs})


def quiet_trainer(tmp_path, **kwargs) -> L.Trainer:
    args = dict(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        use_distributed_sampler=False,
    )
    return L.Trainer(**{**args, **kwargs})


def test_fast_dev_run_fits_validates_and_tests(tmp_path):
    dm = tiny_data()
    model = SequenceAutoencoder(input_size=3, hidden_size=8)
    trainer = quiet_trainer(tmp_path, fast_dev_run=True)
    trainer.fit(model, datamodule=dm)
    assert {"train/loss", "val/loss", "val/mse", "val/mae"} <= set(trainer.callback_metrics)
    trainer.test(model, datamodule=dm, verbose=False)
    assert {"test/loss", "test/mse", "test/mae"} <= set(trainer.callback_metrics)


def test_a_short_fit_lowers_the_validation_loss(tmp_path):
    torch.manual_seed(0)
    dm = tiny_data(num_sequences=512)
    dm.setup("fit")
    model = SequenceAutoencoder(input_size=3, hidden_size=16, lr=0.01)
    model.set_normalization(*dm.normalization())
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=0, enable_checkpointing=False)
    before = trainer.validate(model, datamodule=dm, verbose=False)[0]["val/loss"]
    trainer = quiet_trainer(tmp_path, max_epochs=30, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    after = trainer.callback_metrics["val/loss"].item()
    assert after < 0.75 * before


def test_checkpoint_loads_with_nothing_else_and_reproduces_the_test_loss(tmp_path):
    dm = tiny_data()
    dm.setup("fit")
    model = SequenceAutoencoder(input_size=3, hidden_size=8, num_layers=2, readout="cell", latent_size=5)
    model.set_normalization(*dm.normalization())
    trainer = quiet_trainer(tmp_path, max_epochs=2, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    expected = trainer.test(model, datamodule=dm, verbose=False)[0]["test/loss"]
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    assert isinstance(torch.load(path, weights_only=True)["hyper_parameters"], dict)  # no pickled objects
    loaded = SequenceAutoencoder.load_from_checkpoint(path)  # torch's default weights_only=True
    assert loaded.hparams.readout == "cell" and loaded.encoder.code_size == 5
    torch.testing.assert_close(loaded.norm_scale, model.norm_scale)  # normalisation travels along
    again = quiet_trainer(tmp_path).test(loaded, datamodule=dm, verbose=False)[0]["test/loss"]
    assert again == pytest.approx(expected, rel=1e-6)


def test_encode_takes_original_units():
    model = SequenceAutoencoder(input_size=2, hidden_size=4).eval()
    x = torch.randn(3, 5, 2)
    model.set_normalization(torch.tensor([10.0, -3.0]), torch.tensor([2.0, 0.5]))
    shifted = x * torch.tensor([2.0, 0.5]) + torch.tensor([10.0, -3.0])
    torch.testing.assert_close(model.encode(shifted), model.encoder(x))


def test_masked_mse_ignores_padding():
    target = torch.zeros(2, 4, 1)
    recon = torch.zeros(2, 4, 1)
    recon[0, 3] = 1000.0  # padding of sequence 0 (length 3)
    recon[1, 0] = 2.0  # a real error
    loss = masked_mse(recon, target, torch.tensor([3, 4]))
    assert loss.item() == pytest.approx(4.0 / 7)


def test_reverse_valid_steps_keeps_padding_at_the_end():
    x = torch.arange(1.0, 6.0).view(1, 5, 1).repeat(2, 1, 1)
    out = reverse_valid_steps(x, torch.tensor([5, 3]))
    assert out[0, :, 0].tolist() == [5, 4, 3, 2, 1]
    assert out[1, :, 0].tolist() == [3, 2, 1, 4, 5]
    torch.testing.assert_close(reverse_valid_steps(out, torch.tensor([5, 3])), x)


@pytest.mark.parametrize(("kwargs", "message"), [({"scheduler": "step"}, "scheduler"), ({"lr": 0}, "lr")])
def test_bad_hyper_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SequenceAutoencoder(input_size=2, **kwargs)

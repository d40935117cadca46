"""The dilated convolutional encoder: one code per series from its valid steps, masking only in training."""

from __future__ import annotations

import pytest
import torch

from seqae.errors import ConfigError
from seqae.models.convolutional import DilatedConvEncoder
from seqae.training.module import SequenceAutoencoder

DILATED = {"_target_": "seqae.models.convolutional.DilatedConvEncoder", "depth": 3, "code_size": 10}
DECODER = {"_target_": "seqae.models.decoders.RepeatDecoder", "hidden_size": 8}


def test_a_padded_series_gets_the_code_of_its_valid_steps_alone():
    torch.manual_seed(0)
    enc = DilatedConvEncoder(2, hidden_size=8, depth=3, code_size=10).eval()
    x = torch.randn(3, 30, 2)
    lengths = torch.tensor([30, 17, 5])
    codes = enc(x, lengths)
    assert codes.shape == (3, 10)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(codes[i], enc(x[i : i + 1, :n])[0])
    noisy = x.clone()
    noisy[1, 17:] = 100.0  # what lies past a series' end never reaches its code
    torch.testing.assert_close(enc(noisy, lengths), codes)


def test_steps_are_masked_in_training_and_not_when_encoding():
    torch.manual_seed(0)
    enc = DilatedConvEncoder(1, hidden_size=8, depth=2, code_size=6, dropout=0.0)
    x = torch.randn(4, 20, 1)
    assert not torch.equal(enc.train()(x), enc(x))  # a new mask each call
    torch.testing.assert_close(enc.eval()(x), enc(x))


def test_zero_init_residual_starts_the_blocks_as_identities_that_training_moves():
    torch.manual_seed(0)
    x = torch.randn(4, 20, 1)

    def skipping_the_blocks(enc: DilatedConvEncoder) -> torch.Tensor:  # the last block on the lifted steps
        return enc.blocks[-1](enc.lift(x).transpose(1, 2)).transpose(1, 2)

    enc = DilatedConvEncoder(1, hidden_size=8, depth=3, code_size=6, zero_init_residual=True).eval()
    torch.testing.assert_close(enc.steps(x), skipping_the_blocks(enc))
    enc.train()(x).pow(2).sum().backward()
    assert all(block.conv2.weight.grad.abs().sum() > 0 for block in enc.blocks[:-1])
    random_start = DilatedConvEncoder(1, hidden_size=8, depth=3, code_size=6).eval()
    assert not torch.allclose(random_start.steps(x), skipping_the_blocks(random_start))


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"depth": 0}, "depth"),
        ({"code_size": 2.5}, "code_size"),
        ({"mask": 1.0}, "mask"),
        ({"zero_init_residual": "yes"}, "zero_init_residual"),
    ],
)
def test_bad_settings_fail_at_construction_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=rf"encoder\.{key}"):
        DilatedConvEncoder(1, **kwargs)


def test_in_the_model_it_reads_every_step_while_the_decoder_emits_patches():
    model = SequenceAutoencoder(
        2, encoder=DILATED, decoder=DECODER, instance_norm=True, sequence_length=40, max_recurrent_steps=8
    )
    assert model.patch_size == 5 and model.encoder.lift.in_features == 2  # the series, not 5 x 2 patches
    x = torch.randn(3, 40, 2)
    assert model.eval().encode(x).shape == (3, 10 + 4)  # the code and each series' mean and log std
    assert model(x).shape == x.shape


def test_a_patch_convolution_beside_it_is_refused():
    with pytest.raises(ConfigError, match=r"model\.conv_channels=null"):
        SequenceAutoencoder(1, encoder=DILATED, decoder=DECODER, conv_channels=4)

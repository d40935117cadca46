from __future__ import annotations

import pytest
import torch

from seqae.models.layers import ConvPatches, instance_scale, masked_mse, patches, reverse_valid_steps


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


def test_instance_scale_uses_valid_steps_only_and_keeps_padding_zero():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])  # the last step is padding
    shape, stats = instance_scale(x, torch.tensor([2]))
    assert shape[0, :, 0].tolist() == [-1.0, 1.0, 0.0]
    torch.testing.assert_close(stats, torch.tensor([[2.0, 0.0]]))  # mean 2, log std log(1)


def test_patches_group_steps_and_count_lengths_in_patches():
    x = torch.arange(10.0).view(1, 5, 2)
    out, lengths = patches(x, torch.tensor([5]), 2)
    assert out.shape == (1, 3, 4)  # ceil(5 / 2) patches of 2 steps x 2 features, zero-padded
    assert out[0, 0].tolist() == [0.0, 1.0, 2.0, 3.0] and out[0, 2].tolist() == [8.0, 9.0, 0.0, 0.0]
    assert lengths.tolist() == [3]


def test_conv_patches_see_a_shape_wherever_it_is_in_its_patch():
    conv = ConvPatches(1, channels=4, patch_size=16)
    spike = torch.zeros(2, 32, 1)
    spike[0, 20], spike[1, 27] = 1.0, 1.0  # the same spike at two places of the second patch
    out = conv(spike)
    assert out.shape == (2, 2, 4)
    torch.testing.assert_close(out[0], out[1])


def test_the_patch_convolution_is_read_without_patches_or_instance_norm_too():
    from seqae.models.autoencoder import Autoencoder

    torch.manual_seed(0)
    model = Autoencoder(1, conv_channels=4, instance_norm=False).eval()  # patch_size 1
    x = torch.randn(2, 10, 1)
    with torch.no_grad():
        codes = model.encode(x)
        torch.testing.assert_close(codes, model.encoder(torch.cat([x, model.conv_patches(x)], dim=-1)))

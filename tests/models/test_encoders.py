"""The seed's three encoders are the contract: same weights, same input -> identical codes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqae.models.encoders import READOUTS, RecurrentEncoder


# --- the three classic encoders, written out as in the seed ------------------------------
class SeedRecurrentEncoder(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)

    def forward(self, x):
        _, (h_n, _) = self.lstm(x)
        return h_n.squeeze(0)


class SeedMultiLayerRecurrentEncoder(nn.Module):
    def __init__(self, input_size, hidden_size, num_layers):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True)

    def forward(self, x):
        _, (h_n, _) = self.lstm(x)
        return h_n[-1, :, :]


class SeedRecurrentEncoderCellState(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)

    def forward(self, x):
        _, (_, c_n) = self.lstm(x)
        return c_n.squeeze(0)


@pytest.mark.parametrize(
    ("seed_model", "ours"),
    [
        (lambda: SeedRecurrentEncoder(10, 20), lambda: RecurrentEncoder(10, 20)),
        (lambda: SeedMultiLayerRecurrentEncoder(10, 20, 2), lambda: RecurrentEncoder(10, 20, num_layers=2)),
        (lambda: SeedMultiLayerRecurrentEncoder(10, 20, 3), lambda: RecurrentEncoder(10, 20, num_layers=3)),
        (lambda: SeedRecurrentEncoderCellState(10, 20), lambda: RecurrentEncoder(10, 20, readout="cell")),
    ],
    ids=["single-hidden", "stacked2-hidden", "stacked3-hidden", "single-cell"],
)
def test_identical_to_the_seed_encoders(seed_model, ours):
    torch.manual_seed(0)
    reference, encoder = seed_model(), ours()
    encoder.load_state_dict(reference.state_dict())  # the seed's `lstm.*` keys load unchanged
    x = torch.randn(32, 50, 10)
    expected = reference(x)
    assert expected.shape == (32, 20)
    assert torch.equal(encoder(x), expected)


def test_no_projection_unless_latent_size_is_set():
    assert RecurrentEncoder(4, 8).project is None
    assert all(k.startswith("lstm.") for k in RecurrentEncoder(4, 8).state_dict())
    enc = RecurrentEncoder(4, 8, latent_size=3)
    assert enc.code_size == 3 and enc(torch.randn(2, 5, 4)).shape == (2, 3)


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_code_shape_for_every_lstm_encoder_and_readout(readout, num_layers, bidirectional):
    enc = RecurrentEncoder(3, 8, num_layers, readout, bidirectional=bidirectional)
    # hidden states per direction
    width = {"both": 2, "pooled": 3, "pyramid": 9, "layers": num_layers}.get(readout, 1)
    expected = 8 * (2 if bidirectional else 1) * width
    assert enc.code_size == expected
    assert enc(torch.randn(5, 7, 3)).shape == (5, expected)


@pytest.mark.parametrize("readout", ["hidden", "mean", "max", "pooled", "layers"])
def test_gru_readouts(readout):
    enc = RecurrentEncoder(3, 8, 2, readout, cell="gru")
    assert isinstance(enc.lstm, nn.GRU)
    assert enc(torch.randn(5, 7, 3)).shape == (5, 8 * {"pooled": 3, "layers": 2}.get(readout, 1))


def test_pooled_and_layers_read_what_they_say():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 3)
    pooled, layers = RecurrentEncoder(3, 5, 2, "pooled"), RecurrentEncoder(3, 5, 2, "layers")
    layers.load_state_dict(pooled.state_dict())
    out, (h_n, _) = pooled.lstm(x)
    torch.testing.assert_close(pooled(x), torch.cat([h_n[-1], out.mean(1), out.amax(1)], dim=-1))
    torch.testing.assert_close(layers(x), torch.cat([h_n[0], h_n[1]], dim=-1))  # TimeNet: every layer


def test_pyramid_reads_what_it_says():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 3)
    pyramid = RecurrentEncoder(3, 5, readout="pyramid")
    out, (h_n, _) = pyramid.lstm(x)
    halves, quarters = out.view(2, 2, 4, 5).mean(2).unbind(1), out.view(2, 4, 2, 5).mean(2).unbind(1)
    expected = torch.cat([h_n[-1], out.amax(1), out.mean(1), *halves, *quarters], dim=-1)
    torch.testing.assert_close(pyramid(x), expected)


@pytest.mark.parametrize("readout", ["cell", "both"])
def test_gru_without_a_cell_state_fails_clearly(readout):
    with pytest.raises(ValueError, match="GRU has none"):
        RecurrentEncoder(3, 8, readout=readout, cell="gru")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"num_layers": -1}, "num_layers must be a positive integer"),
        ({"readout": "last"}, "readout must be one of"),
        ({"cell": "rnn"}, "cell must be one of"),
        ({"latent_size": 0}, "latent_size must be a positive integer"),
    ],
)
def test_bad_arguments_name_the_option(kwargs, message):
    args = {"input_size": 3, "hidden_size": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        RecurrentEncoder(**args)


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padded_batch_gives_the_codes_of_each_sequence_alone(readout, bidirectional, cell):
    if cell == "gru" and readout in ("cell", "both"):
        pytest.skip("a GRU has no cell state")
    torch.manual_seed(0)
    enc = RecurrentEncoder(3, 6, 2, readout, cell=cell, bidirectional=bidirectional).eval()
    lengths = torch.tensor([9, 4, 7, 1, 9])
    x = torch.randn(5, 9, 3)
    x[torch.arange(9) >= lengths.unsqueeze(-1)] = 100.0  # garbage in the padding must not leak
    batch_codes = enc(x, lengths)
    alone = torch.cat([enc(x[i : i + 1, : lengths[i]]) for i in range(5)])
    torch.testing.assert_close(batch_codes, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("readout", ["cell", "both", "layers"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_segmented_final_states_equal_a_packed_run_in_value_and_gradient(readout, num_layers):
    torch.manual_seed(0)
    encoder = RecurrentEncoder(3, 5, num_layers, readout)
    x = torch.randn(6, 9, 3, requires_grad=True)
    lengths = torch.tensor([9, 4, 4, 7, 1, 9])
    codes = encoder(x, lengths)
    (grad,) = torch.autograd.grad(codes.square().sum(), x)

    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    _, state = encoder.lstm(packed)
    expected = encoder._read(None, state, lengths)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(codes, expected)
    torch.testing.assert_close(grad, expected_grad)

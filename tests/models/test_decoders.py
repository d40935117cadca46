from __future__ import annotations

import pytest
import torch

from seqae.errors import ConfigError
from seqae.models.decoders import AutoregressiveDecoder, RepeatDecoder
from seqae.models.targets import build


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_repeat_decoder_reconstructs_every_step_and_feature(cell, num_layers):
    dec = RepeatDecoder(code_size=6, hidden_size=8, output_size=3, num_layers=num_layers, cell=cell)
    assert dec.lstm.num_layers == num_layers and dec.lstm.input_size == 6
    assert dec(torch.randn(4, 6), seq_len=11).shape == (4, 11, 3)


def test_a_projected_code_is_the_lstm_input_and_old_checkpoints_keep_the_plain_layout():
    torch.manual_seed(0)
    dec = RepeatDecoder(code_size=40, hidden_size=8, output_size=3, projection_size=6)
    assert dec.lstm.input_size == 6 and dec.project.in_features == 40
    code = torch.randn(4, 40)
    expected, _ = dec.lstm(dec.project(code).unsqueeze(1).expand(-1, 11, -1))
    torch.testing.assert_close(dec(code, 11), dec.out(expected))
    # without projection_size the state dict is what checkpoints written before it hold
    assert set(RepeatDecoder(40, 3, hidden_size=8).state_dict()) == {
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
        "lstm.bias_ih_l0",
        "lstm.bias_hh_l0",
        "out.weight",
        "out.bias",
    }


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_teacher_forcing_equals_stepping_with_the_true_previous_values(cell):
    """The fused teacher-forced call is the same computation as a step-by-step loop fed the truth."""
    torch.manual_seed(0)
    dec = AutoregressiveDecoder(code_size=5, hidden_size=7, output_size=3, num_layers=2, cell=cell)
    code, target = torch.randn(4, 5), torch.randn(4, 9, 3)
    fused = dec(code, 9, target)
    state, previous, steps = dec.initial_state(code), torch.zeros(4, 1, 3), []
    for t in range(9):
        out, state = dec.lstm(previous, state)
        steps.append(dec.out(out))
        previous = target[:, t : t + 1]
    torch.testing.assert_close(fused, torch.cat(steps, 1), atol=1e-6, rtol=1e-5)


def test_free_running_generation_feeds_back_its_own_output():
    torch.manual_seed(0)
    dec = AutoregressiveDecoder(code_size=5, hidden_size=7, output_size=3)
    code = torch.randn(2, 5)
    free = dec(code, 6)
    assert free.shape == (2, 6, 3)
    # Feeding the generated sequence back as the "target" reproduces it: each step saw its own output.
    torch.testing.assert_close(dec(code, 6, free), free, atol=1e-6, rtol=1e-5)


def test_an_unknown_decoder_or_argument_is_named():
    with pytest.raises(ConfigError, match="the module has no TransformerDecoder"):
        build({"_target_": "seqae.models.decoders.TransformerDecoder"}, "decoder", code_size=4, output_size=4)
    spec = {"_target_": "seqae.models.decoders.RepeatDecoder", "input_size": 6}
    with pytest.raises(ConfigError, match=r"RepeatDecoder\(code_size, output_size, input_size\) failed"):
        build(spec, "decoder", code_size=4, output_size=4)

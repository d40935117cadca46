"""Decoders: a code vector per sequence [B, C] -> a reconstruction [B, T, F].

A decoder is built as ``Decoder(code_size=..., output_size=..., **its config)``: seqae passes the
code's width and the values per recurrent step; the rest comes from its YAML in the ``decoder``
config group (``seqae/conf/decoder/``), whether it is seqae's or your own (docs/models.md).

Training always runs as one fused recurrent call over all T steps; only free-running
generation (the autoregressive decoder at validation/test time) loops in Python.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RepeatDecoder(nn.Module):
    """The code, repeated at every step, drives an LSTM; a linear layer maps its outputs to F.

    ``projection_size``: the LSTM reads a linear projection of the code to this many values instead
    of the code itself. The LSTM multiplies its input at every step, so a wide code (``readout=pyramid``)
    costs that many times over; projected once per sequence, it costs once.
    """

    def __init__(
        self,
        code_size: int,
        output_size: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        cell: str = "lstm",
        projection_size: int | None = None,
    ) -> None:
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.project = nn.Linear(code_size, projection_size) if projection_size else None
        self.lstm = rnn(projection_size or code_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.out = nn.Linear(hidden_size, output_size)

    def forward(self, code: Tensor, seq_len: int, target: Tensor | None = None) -> Tensor:
        if self.project is not None:
            code = self.project(code)
        steps = code.unsqueeze(1).expand(-1, seq_len, -1)
        out, _ = self.lstm(steps)
        return self.out(out)


class AutoregressiveDecoder(nn.Module):
    """The code sets the initial state; each step sees the previous value of the sequence.

    With a ``target`` (training) the previous values are the true ones (teacher forcing), so
    all T steps run as one fused call on the target shifted right by one step. Without it the
    decoder generates freely, feeding back its own output one step at a time.
    """

    def __init__(
        self, code_size: int, output_size: int, hidden_size: int = 64, num_layers: int = 1, cell: str = "lstm"
    ) -> None:
        super().__init__()
        self.num_layers, self.hidden_size, self.cell = num_layers, hidden_size, cell
        states = 2 if cell == "lstm" else 1  # (h0, c0) for an LSTM, h0 for a GRU
        self.init_state = nn.Linear(code_size, states * num_layers * hidden_size)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.lstm = rnn(output_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.out = nn.Linear(hidden_size, output_size)

    def initial_state(self, code: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        s = torch.tanh(self.init_state(code))  # [B, states * L * H]
        s = s.view(code.shape[0], -1, self.num_layers, self.hidden_size).permute(1, 2, 0, 3)
        s = s.contiguous()  # [states, L, B, H]
        return (s[0], s[1]) if self.cell == "lstm" else s[0]

    def forward(self, code: Tensor, seq_len: int, target: Tensor | None = None) -> Tensor:
        state = self.initial_state(code)
        if target is not None:
            previous = torch.cat([target.new_zeros(target.shape[0], 1, target.shape[2]), target[:, :-1]], 1)
            out, _ = self.lstm(previous, state)
            return self.out(out)
        return self.generate(code, seq_len, state)

    def generate(self, code: Tensor, seq_len: int, state: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        step = code.new_zeros(code.shape[0], 1, self.out.out_features)
        outputs = []
        for _ in range(seq_len):
            out, state = self.lstm(step, state)
            step = self.out(out)
            outputs.append(step)
        return torch.cat(outputs, dim=1)

"""Recurrent encoders: a batch of sequences [B, T, F] -> one code vector per sequence [B, C].

The classic pattern is ``_, (h_n, c_n) = lstm(x)`` and a *readout* of the final state.
``RecurrentEncoder(I, H)`` is exactly the seed's single-layer encoder (``h_n.squeeze(0)``),
``RecurrentEncoder(I, H, num_layers=L)`` the stacked one (``h_n[-1]``) and
``RecurrentEncoder(I, H, readout="cell")`` the cell-state one (``c_n.squeeze(0)``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqae.errors import ConfigError
from seqae.models.layers import steps_mask

READOUTS = ("hidden", "cell", "both", "mean", "max", "pooled", "pyramid", "layers")
# readout=pyramid: the outputs averaged over the whole series, its halves and its quarters
PYRAMID = (1, 2, 4)
CELLS = ("lstm", "gru")


class RecurrentEncoder(nn.Module):
    """An LSTM (or, with ``cell="gru"``, a GRU) with a choice of readout.

    readout: ``hidden`` (last layer's final h), ``cell`` (last layer's final c), ``both``
    (h and c concatenated), ``mean`` or ``max`` (last layer's outputs averaged, or their maximum,
    over valid steps), ``pooled`` (final h, mean and max concatenated), ``pyramid`` (final h, max,
    and the mean over the whole series, each half and each quarter of its valid steps: where in the
    series a pattern occurs, as spatial pyramid pooling keeps) or ``layers`` (every layer's final h
    concatenated, as TimeNet does). With ``bidirectional`` the two directions'
    final states are concatenated. ``latent_size`` adds a linear projection of the readout;
    without it the code is the readout itself.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        readout: str = "hidden",
        *,
        cell: str = "lstm",
        bidirectional: bool = False,
        dropout: float = 0.0,
        latent_size: int | None = None,
    ) -> None:
        super().__init__()
        check_encoder_args(input_size, hidden_size, num_layers, readout, cell, dropout, latent_size)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        # Named `lstm` (even for a GRU) so a seed model's `lstm.*` state_dict loads unchanged.
        self.lstm = rnn(
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.readout = readout
        directions = 2 if bidirectional else 1
        widths = {"both": 2, "pooled": 3, "pyramid": 2 + sum(PYRAMID), "layers": num_layers}
        self.readout_size = hidden_size * directions * widths.get(readout, 1)
        self.project = nn.Linear(self.readout_size, latent_size) if latent_size else None
        self.code_size = latent_size or self.readout_size

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x: [B, T, F]; lengths: [B] valid steps per sequence (None = all T). Returns [B, C]."""
        if lengths is not None and bool((lengths == x.shape[1]).all()):
            lengths = None  # an equal-length batch (e.g. a length bucket) is exact without packing
        if lengths is None:
            out, state = self.lstm(x)
        elif self.lstm.bidirectional:  # the backward direction must start at each sequence's own end
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, state = self.lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        elif self.readout in ("hidden", "mean", "max", "pooled", "pyramid"):
            # The top layer's outputs up to each sequence's end do not depend on the padding,
            # so the padded (fast, fused) run is exact for these readouts.
            out, state = self.lstm(x)
            if self.readout == "hidden":
                return self._project(out[torch.arange(x.shape[0], device=x.device), lengths - 1])
        else:  # cell states (and lower layers) are read where each sequence ends
            out, state = None, self._final_state_by_segments(x, lengths)
        return self._project(self._read(out, state, lengths))

    def _final_state_by_segments(self, x: Tensor, lengths: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Each sequence's final state at its own last step, exactly, without packing.

        The fused LSTM runs from one distinct length of the batch to the next, carrying the state
        of the sequences that go on. A length-bucketed batch has few distinct lengths, so this is
        a few fused calls, several times faster than a packed run on CPU.
        """
        lengths = lengths.to(x.device)
        lstm_state = isinstance(self.lstm, nn.LSTM)
        parts = 2 if lstm_state else 1
        final = [x.new_empty(self.lstm.num_layers, x.shape[0], self.lstm.hidden_size) for _ in range(parts)]
        active, state, start = torch.arange(x.shape[0], device=x.device), None, 0
        for end in torch.unique(lengths).tolist():  # ascending
            _, state = self.lstm(x[active, start:end], state)
            state = state if lstm_state else (state,)
            done = lengths[active] == end
            for f, s in zip(final, state, strict=True):
                f[:, active[done]] = s[:, done]
            active, start = active[~done], end
            state = tuple(s[:, ~done].contiguous() for s in state)
            state = state if lstm_state else state[0]
        return tuple(final) if lstm_state else final[0]

    def _read(self, out: Tensor, state: Tensor | tuple[Tensor, Tensor], lengths: Tensor | None) -> Tensor:
        if self.readout in ("mean", "max", "pooled", "pyramid"):
            mean, peak = pool(out, lengths)
            if self.readout in ("mean", "max"):
                return mean if self.readout == "mean" else peak
            final = (
                out[:, -1] if lengths is None else out[torch.arange(len(out), device=out.device), lengths - 1]
            )
            if self.lstm.bidirectional:  # the backward direction ends at step 0
                final = self._last_layer(state[0] if isinstance(state, tuple) else state)
            if self.readout == "pyramid":  # the whole series' mean is pool's; then the finer levels
                return torch.cat([final, peak, mean, *segment_means(out, lengths, PYRAMID[1:])], dim=-1)
            return torch.cat([final, mean, peak], dim=-1)
        h_n, c_n = state if isinstance(state, tuple) else (state, None)
        if self.readout == "layers":  # [layers * directions, B, H] -> [B, layers * directions * H]
            return h_n.permute(1, 0, 2).flatten(1)
        if self.readout == "hidden":
            return self._last_layer(h_n)
        if self.readout == "cell":
            return self._last_layer(c_n)
        return torch.cat([self._last_layer(h_n), self._last_layer(c_n)], dim=-1)

    def _last_layer(self, s_n: Tensor) -> Tensor:
        # s_n: [layers * directions, B, H]; the last layer's directions, concatenated -> [B, dirs * H]
        if not self.lstm.bidirectional:
            return s_n[-1]
        return torch.cat([s_n[-2], s_n[-1]], dim=-1)

    def _project(self, readout: Tensor) -> Tensor:
        return self.project(readout) if self.project is not None else readout


def pool(out: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """The mean and the maximum of ``out`` [B, T, C] over each sequence's valid steps."""
    if lengths is None:
        return out.mean(dim=1), out.amax(dim=1)
    mask = steps_mask(lengths, out.shape[1]).unsqueeze(-1)
    mean = (out * mask).sum(dim=1) / lengths.to(out.dtype).unsqueeze(-1)
    return mean, out.masked_fill(~mask, float("-inf")).amax(dim=1)


def segment_means(out: Tensor, lengths: Tensor | None, levels: tuple[int, ...]) -> list[Tensor]:
    """For each level n, the mean of ``out`` [B, T, C] over each of n equal segments of each
    sequence's valid steps (a step belongs to the segment its position falls in)."""
    steps = out.shape[1]
    valid = torch.full((len(out),), steps, device=out.device) if lengths is None else lengths.to(out.device)
    position = torch.arange(steps, device=out.device) / valid.unsqueeze(-1).to(out.dtype)  # [B, T] in [0, 1)
    means = []
    for n in levels:
        segment = (position * n).floor()  # [B, T]; >= n past the end
        for k in range(n):
            weight = (segment == k).to(out.dtype)
            count = weight.sum(1, keepdim=True).clamp_min(1.0)
            means.append((out * weight.unsqueeze(-1)).sum(1) / count)
    return means


def check_encoder_args(
    input_size: int,
    hidden_size: int,
    num_layers: int,
    readout: str,
    cell: str,
    dropout: float,
    latent_size: int | None,
) -> None:
    """Fail at construction, with the option's name, rather than deep inside a training step."""
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(
                f"{name} must be a positive integer (encoder.{name} in the config), got {value!r}."
            )
    if latent_size is not None and (not isinstance(latent_size, int) or latent_size < 1):
        raise ConfigError(f"encoder.latent_size must be a positive integer or null, got {latent_size!r}.")
    if cell not in CELLS:
        raise ConfigError(f"encoder.cell must be one of {CELLS}, got {cell!r}.")
    if readout not in READOUTS:
        raise ConfigError(f"readout must be one of {READOUTS}, got {readout!r}.")
    if cell == "gru" and readout in ("cell", "both"):
        raise ConfigError(
            f"readout={readout!r} needs a cell state, but a GRU has none: use readout=hidden or "
            f"readout=mean with encoder=gru, or an LSTM encoder with readout={readout!r}."
        )
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"encoder.dropout must be in [0, 1), got {dropout!r}.")

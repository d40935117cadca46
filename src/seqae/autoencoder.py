"""The sequence autoencoder as a plain ``nn.Module``: normalisation, per-series scaling, patches, the
encoder, the decoder and the loss. ``seqae.model.SequenceAutoencoder`` trains it with Lightning."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from seqae.decoders import build_decoder
from seqae.encoders import steps_mask
from seqae.errors import ConfigError
from seqae.objectives import build_objective
from seqae.targets import build

# instance_norm: a series flatter than this variance (in normalised units) is scaled as if it had it
INSTANCE_VAR_FLOOR = 1e-6


class Autoencoder(nn.Module):
    """An encoder and a decoder around one code per series.

    Inputs are normalised inside the model (``norm_loc``/``norm_scale`` buffers, fitted on the
    training split and saved in the checkpoint), so ``encode`` takes data in its original units.

    - ``instance_norm``: each series is also scaled by its own mean and standard deviation (per
      feature, over its valid steps) before the encoder sees it, and those two statistics join the
      code (RevIN, Kim et al. 2022): the recurrent layers see shapes, the code keeps the levels.
      The decoder reconstructs the scaled series; ``forward`` undoes the scaling with the code's
      statistics.
    - ``max_recurrent_steps``: a series longer than this is read ``patch_size`` steps at a time
      (``ceil(sequence_length / max_recurrent_steps)``, each recurrent step a patch of
      ``patch_size x input_size`` values), by the encoder and the decoder alike.
    - ``decoder_input_size``: the repeat decoder reads a linear projection of the code to this
      many values, not the code itself (seqae/decoders.py).
    - ``reverse_target`` trains the decoder to emit the sequence backwards (Srivastava et al.
      2015); ``forward`` always returns it in the original order.
    - ``objective`` (seqae/objectives/): what the encoder sees and what is added to the
      reconstruction loss, e.g. ``denoising`` or DTCR's ``fake_samples``.
    - ``encoder``, ``decoder``, ``objective`` as ``{"_target_": "mylab.ConvEncoder", **kwargs}``: a
      module of the researcher's own (seqae/targets.py; docs/models.md gives the contracts). Without
      an ``encoder`` spec the encoder is seqae's recurrent one, built the same way from
      ``hidden_size``, ``num_layers``, ``readout``, ``cell``, ``bidirectional``, ``dropout`` and
      ``latent_size``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        readout: str = "hidden",
        cell: str = "lstm",
        bidirectional: bool = False,
        dropout: float = 0.0,
        latent_size: int | None = None,
        decoder: str | dict[str, Any] = "repeat",
        decoder_input_size: int | None = None,
        reverse_target: bool = False,
        instance_norm: bool = False,
        sequence_length: int | None = None,
        max_recurrent_steps: int | None = None,
        objective: str | dict[str, Any] = "reconstruction",
        objective_args: dict[str, Any] | None = None,
        encoder: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if max_recurrent_steps is not None and not (
            isinstance(max_recurrent_steps, int) and max_recurrent_steps >= 1
        ):
            raise ConfigError(
                f"model.max_recurrent_steps must be a positive integer or null, got {max_recurrent_steps!r}."
            )
        self.reverse_target, self.instance_norm = reverse_target, instance_norm
        self.patch_size = (
            max(1, math.ceil(sequence_length / max_recurrent_steps))
            if max_recurrent_steps and sequence_length
            else 1
        )
        steps_in = input_size * self.patch_size  # the values of one recurrent step
        self.reads_as_is = not instance_norm and self.patch_size == 1  # no scaling, no patches
        recurrent = dict(
            _target_="seqae.encoders.LSTMEncoder",
            hidden_size=hidden_size,
            num_layers=num_layers,
            readout=readout,
            cell=cell,
            bidirectional=bidirectional,
            dropout=dropout,
            latent_size=latent_size,
        )
        self.encoder = build(encoder or recurrent, "encoder", input_size=steps_in)
        encoded = getattr(self.encoder, "code_size", None)
        if not isinstance(encoded, int) or encoded < 1:
            raise ConfigError(
                f"encoder {type(self.encoder).__qualname__} has code_size={encoded!r}; an encoder sets "
                f"self.code_size, the width of the [B, code_size] codes its forward returns."
            )
        self.code_size = encoded + (2 * input_size if instance_norm else 0)
        self.decoder = build_decoder(
            decoder, self.code_size, hidden_size, steps_in, num_layers, cell, decoder_input_size
        )
        self.objective = build_objective(
            objective, self.code_size, objective_args, stats_size=self.code_size - encoded
        )
        self.register_buffer("norm_loc", torch.zeros(input_size))
        self.register_buffer("norm_scale", torch.ones(input_size))

    def set_normalization(self, loc: Tensor, scale: Tensor) -> None:
        """Per-feature statistics of the training split: the model sees (x - loc) / scale."""
        self.norm_loc.copy_(torch.as_tensor(loc, dtype=self.norm_loc.dtype))
        self.norm_scale.copy_(torch.as_tensor(scale, dtype=self.norm_scale.dtype))

    def normalize(self, x: Tensor) -> Tensor:
        # Dividing in place, into the subtraction's own new tensor, allocates once instead of twice:
        # the same numbers, and about 1% off encoding a seed-sized split (normalised all at once).
        return (x - self.norm_loc).div_(self.norm_scale)

    def encode(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x in original units [B, T, F] -> codes [B, C]."""
        return self.encode_normalized(self.normalize(x), lengths)

    def encode_normalized(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x already normalised (``normalize``) -> codes [B, C]."""
        if self.reads_as_is:  # the encoder's own call, as a hand-written loop makes it (scripts/benchmark.py)
            return self.encoder(x, lengths)
        shape, stats = self.scale_series(x, lengths)
        return self._encode(shape, lengths, stats)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x in original units -> reconstruction in original units and order (free-running)."""
        shape, stats = self.scale_series(self.normalize(x), lengths)
        code = self._encode(shape, lengths, stats)
        recon = self._decode(code, x.shape[1], None)
        if self.reverse_target:
            recon = reverse_valid_steps(recon, lengths)
        if stats is not None:  # the code's own statistics give each series its level and scale back
            loc, log_scale = stats.to(recon.dtype).chunk(2, dim=-1)
            recon = recon * log_scale.exp().unsqueeze(1) + loc.unsqueeze(1)
        return recon * self.norm_scale + self.norm_loc

    def reconstruction(
        self, x: Tensor, lengths: Tensor | None = None, teacher_forcing: bool = False
    ) -> tuple[Tensor, Tensor]:
        """x in original units -> (target, reconstruction) in the units and order the model trains in:
        normalised, scaled per series with ``instance_norm``, reversed with ``reverse_target``."""
        shape, stats = self.scale_series(self.normalize(x), lengths)
        target = reverse_valid_steps(shape, lengths) if self.reverse_target else shape
        code = self._encode(shape, lengths, stats)
        recon = self._decode(code, x.shape[1], target if teacher_forcing else None)
        return target, recon.to(target.dtype)  # under autocast the LSTM answers in bf16/fp16

    def training_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The objective's loss on a batch, and the reconstruction (for reports of non-finite losses)."""
        x, lengths = batch["x"], batch.get("lengths")
        shape, stats = self.scale_series(self.normalize(x), lengths)
        target = reverse_valid_steps(shape, lengths) if self.reverse_target else shape
        code = self._encode(self.objective.corrupt(shape, lengths), lengths, stats)
        recon = self._decode(code, x.shape[1], target).to(target.dtype)
        loss = masked_mse(recon, target, lengths)
        extra = self.objective.extra_loss(lambda s, n: self._encode(s, n, stats), shape, lengths, code)
        return (loss if extra is None else loss + extra), recon

    def scale_series(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """With ``instance_norm``: each series over its own valid steps' mean and standard deviation,
        and [mean, log std] per feature [B, 2F]; otherwise x as it is, and None."""
        if not self.instance_norm:
            return x, None
        if lengths is None:
            loc, var = x.mean(dim=1), x.var(dim=1, unbiased=False)
            mask = None
        else:
            mask = steps_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
            count = lengths.to(x.dtype).unsqueeze(-1)
            loc = (x * mask).sum(dim=1) / count
            var = (((x - loc.unsqueeze(1)) * mask) ** 2).sum(dim=1) / count
        scale = var.clamp_min(INSTANCE_VAR_FLOOR).sqrt()
        shape = (x - loc.unsqueeze(1)) / scale.unsqueeze(1)
        if mask is not None:
            shape = shape * mask  # padding stays zero
        return shape, torch.cat([loc, scale.log()], dim=-1)

    def _encode(self, shape: Tensor, lengths: Tensor | None, stats: Tensor | None) -> Tensor:
        code = self.encoder(*self._patch(shape, lengths))
        return code if stats is None else torch.cat([code, stats.to(code.dtype)], dim=-1)

    def _decode(self, code: Tensor, steps: int, target: Tensor | None) -> Tensor:
        """The decoder's [B, steps, F]: it emits ``patch_size`` steps per recurrent step."""
        if self.patch_size == 1:
            return self.decoder(code, steps, target)
        patches = -(-steps // self.patch_size)
        recon = self.decoder(code, patches, None if target is None else self._patch(target, None)[0])
        recon = recon.reshape(recon.shape[0], patches * self.patch_size, -1)
        return recon if recon.shape[1] == steps else recon[:, :steps].contiguous()

    def _patch(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """[B, T, F] -> [B, ceil(T / p), p * F] (zero-padded), and each sequence's length in patches."""
        p = self.patch_size
        if p == 1:
            return x, lengths
        steps = x.shape[1]
        if steps % p:
            x = torch.nn.functional.pad(x, (0, 0, 0, p - steps % p))
        x = x.reshape(x.shape[0], x.shape[1] // p, p * x.shape[2])
        return x, None if lengths is None else torch.div(lengths + p - 1, p, rounding_mode="floor")


def masked_mse(recon: Tensor, target: Tensor, lengths: Tensor | None) -> Tensor:
    """Mean squared error over valid steps only (padding never counts)."""
    if lengths is None:
        return torch.nn.functional.mse_loss(recon, target)
    mask = steps_mask(lengths, target.shape[1]).unsqueeze(-1).to(recon.dtype)
    return ((recon - target) ** 2 * mask).sum() / (mask.sum() * target.shape[-1])


def reverse_valid_steps(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence's valid steps in time; padding stays at the end."""
    if lengths is None:
        return x.flip(1)
    t = torch.arange(x.shape[1], device=x.device)
    lengths = lengths.to(x.device).unsqueeze(-1)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # [B, T]
    return x.gather(1, index.unsqueeze(-1).expand_as(x))

"""The sequence autoencoder as a plain ``nn.Module``: normalisation, per-series scaling, patches, the
encoder, the decoder and the loss. ``seqae.training.module.SequenceAutoencoder`` trains it with Lightning."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from seqae.errors import ConfigError
from seqae.models.layers import ConvPatches, instance_scale, masked_mse, patches, reverse_valid_steps
from seqae.models.objectives import build_objective
from seqae.models.targets import build, resolve

# What is built without a spec (seqae's own, as their YAMLs name them), e.g. in ``Autoencoder(3)``.
ENCODER = {"_target_": "seqae.models.encoders.RecurrentEncoder"}
DECODER = {"_target_": "seqae.models.decoders.RepeatDecoder"}
OBJECTIVE = {"_target_": "seqae.models.objectives.reconstruction.Reconstruction"}


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
      ``patch_size x input_size`` values), by the encoder and the decoder alike. An encoder whose
      class sets ``reads_full_series = True`` (a convolution, ``encoder=dilated``) reads every step
      itself; the decoder still emits patches.
    - ``conv_channels``: each recurrent step of the encoder also reads, per channel, the maximum over
      its patch of a kernel-9 convolution along the series (``layers.ConvPatches``).
    - ``reverse_target`` trains the decoder to emit the sequence backwards (Srivastava et al.
      2015); ``forward`` always returns it in the original order.
    - ``encoder``, ``decoder``, ``objective``: each a ``{"_target_": "package.module.Class", **kwargs}``
      spec, seqae's own (``seqae/conf/encoder/`` and the other groups) or a researcher's
      (seqae/models/targets.py; docs/models.md gives the contracts). seqae passes ``input_size`` to
      the encoder, ``code_size`` and ``output_size`` to the decoder, ``code_size`` to the objective.
      Without one: the recurrent encoder, the repeat decoder and reconstruction alone, at their
      classes' defaults.
    """

    def __init__(
        self,
        input_size: int,
        encoder: dict[str, Any] | None = None,
        decoder: dict[str, Any] | None = None,
        objective: dict[str, Any] | None = None,
        reverse_target: bool = False,
        instance_norm: bool = False,
        sequence_length: int | None = None,
        max_recurrent_steps: int | None = None,
        conv_channels: int | None = None,
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
        encoder = encoder or ENCODER
        # An encoder that reads every step itself (a convolution) gets the series, not patches;
        # the decoder still emits patches.
        self.full_series = bool(getattr(resolve(encoder, "encoder"), "reads_full_series", False))
        if self.full_series and conv_channels:
            raise ConfigError(
                f"model.conv_channels={conv_channels} adds a convolution read per patch, but "
                f"{encoder['_target_']} reads the whole series step by step: set model.conv_channels=null."
            )
        self.conv_patches = None
        if conv_channels:
            self.conv_patches = ConvPatches(input_size, conv_channels, self.patch_size)
        # no scaling, no patches, no convolution: the encoder reads the normalised series itself
        self.reads_as_is = (
            not instance_norm and not conv_channels and (self.patch_size == 1 or self.full_series)
        )
        encoder_input = input_size if self.full_series else steps_in + (conv_channels or 0)
        self.encoder = build(encoder, "encoder", input_size=encoder_input)
        encoded = getattr(self.encoder, "code_size", None)
        if not isinstance(encoded, int) or encoded < 1:
            raise ConfigError(
                f"encoder {type(self.encoder).__qualname__} has code_size={encoded!r}; an encoder sets "
                f"self.code_size, the width of the [B, code_size] codes its forward returns."
            )
        self.code_size = encoded + (2 * input_size if instance_norm else 0)
        self.decoder = build(decoder or DECODER, "decoder", code_size=self.code_size, output_size=steps_in)
        self.objective = build_objective(
            objective or OBJECTIVE, self.code_size, stats_size=self.code_size - encoded
        )
        if getattr(self.objective, "needs_steps", False) and not callable(
            getattr(self.encoder, "steps", None)
        ):
            raise ConfigError(
                f"objective {type(self.objective).__qualname__} contrasts the encoder's per-step outputs, "
                f"but {type(self.encoder).__qualname__} has no steps(x, lengths) method that gives them: "
                f"use an encoder that has one (encoder=dilated)."
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
        extra = self.objective.extra_loss(
            lambda s, n, per_step=False: (
                self.encoder.steps(*self._encoder_input(s, n)) if per_step else self._encode(s, n, stats)
            ),
            shape,
            lengths,
            code,
        )
        return (loss if extra is None else loss + extra), recon

    def scale_series(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """With ``instance_norm``: each series over its own mean and standard deviation, and those
        statistics [B, 2F] (``seqae.models.layers.instance_scale``); otherwise x as it is, and None."""
        return instance_scale(x, lengths) if self.instance_norm else (x, None)

    def _encoder_input(self, shape: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """What the encoder reads: the series itself (``reads_full_series``), or its patches and the
        convolution read per patch, with each series' length in those steps."""
        if self.full_series:
            return shape, lengths
        steps, step_lengths = patches(shape, lengths, self.patch_size)
        if self.conv_patches is not None:
            steps = torch.cat([steps, self.conv_patches(shape).to(steps.dtype)], dim=-1)
        return steps, step_lengths

    def _encode(self, shape: Tensor, lengths: Tensor | None, stats: Tensor | None) -> Tensor:
        code = self.encoder(*self._encoder_input(shape, lengths))
        return code if stats is None else torch.cat([code, stats.to(code.dtype)], dim=-1)

    def _decode(self, code: Tensor, steps: int, target: Tensor | None) -> Tensor:
        """The decoder's [B, steps, F]: it emits ``patch_size`` steps per recurrent step."""
        if self.patch_size == 1:
            return self.decoder(code, steps, target)
        count = -(-steps // self.patch_size)
        recon = self.decoder(
            code, count, None if target is None else patches(target, None, self.patch_size)[0]
        )
        recon = recon.reshape(recon.shape[0], count * self.patch_size, -1)
        return recon if recon.shape[1] == steps else recon[:, :steps].contiguous()

"""How fast is seqae against the same work written by hand in plain PyTorch, on this machine?

    python scripts/benchmark.py                    # everything, about 3.5 minutes on 2 cores
    python scripts/benchmark.py --quick --out b.json   # tiny sizes, seconds (the smoke test)
    python scripts/benchmark.py --only fit --sizes seed --rounds 8 --processes 1 --threads 1

Sections (each a Markdown table on stdout; all numbers in the ``--out`` JSON):

* fit: seqae's real training path (``seqae.train.train`` on the composed default config, so the
  DataModule, ``SequenceAutoencoder``, callbacks, TensorBoard logger and ``Trainer`` are what
  ``python train.py`` builds) against a hand-written loop (nn.LSTM encoder, repeat decoder, Adam,
  the same gradient clipping, batches sliced from the same tensors), in one process. The sides take
  turns an epoch at a time (A B A B ...): each round is one seqae fit, and before each of its epochs
  a plain loop of its own runs one epoch. On a shared machine whose speed drifts within a second,
  adjacent epochs see nearly the same machine, so the ratio is the median over pairs of adjacent
  epochs (seqae's against the plain one just before it), with an approximate 95% interval.
  Steady-state steps/s counts the steps inside an epoch; "with epoch ends" also counts what
  happens before the side's next epoch (seqae: validation, checkpoints, plots; plain: a validation
  pass). "Best epochs" compares each side's fastest epoch of all rounds.
* encode: ``seqae.evaluation.codes.encode_split`` against a bare ``nn.LSTM`` forward in inference mode, both
  from raw data (the bare side normalises the whole array in one op) to an array of codes.
* scaling: a training step as sequence length, batch and hidden size double; the model's achieved
  GFLOP/s against ``torch.mm`` at the LSTM's recurrent GEMM shape.
* startup: ``python train.py`` to its first training step, and where the seconds go.

Each side is timed at a random C stack depth every round (``at_stack_depth``: the LSTM kernel's
speed depends on it), and the fit and encode comparisons run in ``--processes`` fresh processes
(default 3), one after another; their tables give the median over processes and each process's
ratio.

Every section runs where the composed config's Trainer would (``trainer=gpu``, or a GPU that
``accelerator: auto`` finds), and the fit section in its precision (``trainer.precision=bf16-mixed``):
the plain side then keeps its data on the device and uses autocast, and a GradScaler for 16-mixed.
Epochs are timed once the GPU has finished their queued work.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from seqae.startup import frozen_imports

with frozen_imports():  # as train.py imports them, so that seqae's fit here meets the same collector
    import lightning as L
    import torch
    from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Size:
    """One benchmark size: the model and data shapes, and how much work a round does."""

    input: int
    hidden: int
    seq_len: int
    batch: int
    sequences: int  # data.num_sequences: 80% of them train (val/test fractions 0.1 each)
    epochs: int  # epochs per fit round; the first is the warm-up, the others are timed

    def overrides(self) -> list[str]:
        return [
            f"data.num_features={self.input}",
            f"data.seq_len={self.seq_len}",
            f"data.batch_size={self.batch}",
            f"data.num_sequences={self.sequences}",
            f"encoder.hidden_size={self.hidden}",
            *PLAIN_MODEL,
        ]


# The plain loop's model, the seed's LSTM autoencoder: overhead is what is compared. The recurrent
# recipe's pyramid readout, corrupted inputs, convolution, projected decoder input, per-series scaling,
# patches and reversed target are other work, not overhead.
PLAIN_MODEL = [
    "encoder=single",
    "readout=hidden",
    "objective=reconstruction",
    "decoder.projection_size=null",
    "model.instance_norm=false",
    "model.max_recurrent_steps=null",
    "model.conv_channels=null",
    "model.reverse_target=false",
]


SIZES = {
    # the seed example's model: overhead per step is what matters here. Five timed epochs (about a
    # second a side): with rounds of two, a slow phase of the shared machine often fell on one side.
    "seed": Size(input=10, hidden=20, seq_len=50, batch=32, sequences=2048, epochs=6),
    # a realistic model: about a second per step on one core, so short epochs (4 steps)
    "realistic": Size(input=32, hidden=256, seq_len=128, batch=128, sequences=640, epochs=3),
    # the smoke test's size: seconds for the whole benchmark
    "tiny": Size(input=3, hidden=8, seq_len=12, batch=16, sequences=160, epochs=2),
}


# -- composing the config exactly as `python train.py` does ----------------------------------
def compose_train_config(overrides: list[str], output_dir: Path):
    """The config `python train.py <overrides>` sees, with HydraConfig set as in a real run."""
    from seqae.train import compose_config

    return compose_config(overrides, output_dir)


def set_run_dir(cfg, output_dir: Path) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    with read_write(cfg.hydra), open_dict(cfg):  # HydraConfig.set_config made it read-only
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)


# -- the hand-written baseline ---------------------------------------------------------------
class PlainAutoencoder(nn.Module):
    """What a user writes by hand: the seed's LSTM encoder (h_n[-1]), the code repeated into an LSTM decoder."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.encoder = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.decoder = nn.LSTM(hidden_size, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, input_size)

    def forward(self, x: Tensor) -> Tensor:
        _, (h_n, _) = self.encoder(x)
        out, _ = self.decoder(h_n[-1].unsqueeze(1).expand(-1, x.shape[1], -1))
        return self.out(out)


@dataclass
class Stamps:
    """Each epoch of one side: when its training part started and ended, when its whole cycle ended
    (validation and whatever else runs before the side's next epoch), wall and CPU seconds, and the
    optimizer steps and sequences done by the end of its training part. Every stamp waits for the
    GPU (``now``), so queued work counts."""

    starts: dict[int, tuple[float, float]] = field(default_factory=dict)
    ends: dict[int, tuple[float, float]] = field(default_factory=dict)
    cycle_ends: dict[int, tuple[float, float]] = field(default_factory=dict)
    steps: dict[int, int] = field(default_factory=dict)
    sequences: dict[int, int] = field(default_factory=dict)

    def start_epoch(self, epoch: int) -> None:
        self.starts[epoch] = now()

    def end_epoch(self, epoch: int, steps: int, sequences: int) -> None:
        self.ends[epoch], self.steps[epoch], self.sequences[epoch] = now(), steps, sequences

    def end_cycle(self, epoch: int) -> None:
        self.cycle_ends[epoch] = now()

    def timed_epochs(self) -> list[int]:
        """The epochs after the first (the warm-up)."""
        later = sorted(e for e in self.ends if e > 0)
        if not later or 0 not in self.ends:
            raise ValueError("a fit round needs at least 2 epochs: the first one is the warm-up")
        return later

    def epoch_rates(self, epoch: int) -> dict[str, float]:
        """One epoch's steps/s: over its training part, and over its whole cycle ("with epoch ends"),
        by the wall clock and by this process's CPU time (``_cpu``)."""
        steps = self.steps[epoch] - self.steps[epoch - 1]
        rates = {}
        for clock, suffix in ((0, ""), (1, "_cpu")):
            rates[f"steps_per_s{suffix}"] = steps / (self.ends[epoch][clock] - self.starts[epoch][clock])
            cycle = self.cycle_ends[epoch][clock] - self.starts[epoch][clock]
            rates[f"steps_per_s_with_epoch_ends{suffix}"] = steps / cycle
        return rates

    def rates(self) -> dict[str, float]:
        """Steady-state rates over the timed epochs: their training parts, and their whole cycles."""
        later = self.timed_epochs()
        steps = self.steps[later[-1]] - self.steps[0]
        sequences = self.sequences[later[-1]] - self.sequences[0]
        rates = {"steps_per_s_best_epoch": max(self.epoch_rates(e)["steps_per_s"] for e in later)}
        for clock, suffix in ((0, ""), (1, "_cpu")):
            train_t = sum(self.ends[e][clock] - self.starts[e][clock] for e in later)
            cycle_t = sum(self.cycle_ends[e][clock] - self.starts[e][clock] for e in later)
            rates |= {
                f"steps_per_s{suffix}": steps / train_t,
                f"sequences_per_s{suffix}": sequences / train_t,
                f"steps_per_s_with_epoch_ends{suffix}": steps / cycle_t,
                f"sequences_per_s_with_epoch_ends{suffix}": sequences / cycle_t,
            }
        return rates


def now() -> tuple[float, float]:
    """(wall, CPU) seconds, once the GPU has done what was queued: work is counted when it is done."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


# -- where and in what precision train.py's Trainer runs; the plain side does the same -------------
AUTOCAST_DTYPES = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def device_and_precision(cfg) -> tuple[torch.device, str]:
    """The device and precision the composed config's Trainer picks (Lightning decides ``auto``)."""
    from hydra.utils import instantiate

    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    if trainer.world_size > 1:
        raise ValueError(
            f"The benchmark compares one process with a plain loop; trainer.devices={cfg.trainer.devices} "
            f"and trainer.num_nodes={cfg.trainer.num_nodes} start {trainer.world_size}. Use one device."
        )
    precision = str(trainer.precision)
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(
            f"trainer.precision={precision}: the plain loop is written for {sorted(AUTOCAST_DTYPES)}."
        )
    return trainer.strategy.root_device, precision


class PlainLoop:
    """The hand-written loop: shuffle, slice, forward, MSE, backward, clip, Adam, a cosine scheduler
    step; a validation pass per epoch. The data sits on the device from the start; mixed precision is
    autocast (and, for 16-mixed, a GradScaler), as the PyTorch AMP recipe writes it. It runs one
    epoch per ``run_epoch`` call, so the benchmark can run its epochs between seqae's."""

    def __init__(self, x_train: Tensor, x_val: Tensor, cfg, seed: int, device: torch.device, precision: str):
        torch.manual_seed(seed)
        self.x_train, self.x_val = x_train.to(device), x_val.to(device)
        self.batch, self.device, self.log_every = cfg.data.batch_size, device, cfg.trainer.log_every_n_steps
        self.model = PlainAutoencoder(x_train.shape[-1], cfg.encoder.hidden_size).to(device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.model.lr, weight_decay=cfg.model.weight_decay
        )
        steps = cfg.trainer.max_epochs * math.ceil(len(x_train) / self.batch)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=steps)
        self.clip = cfg.model.get("gradient_clip_val") or cfg.trainer.get("gradient_clip_val")
        dtype = AUTOCAST_DTYPES[precision]
        self.autocast = partial(torch.autocast, device.type, dtype=dtype) if dtype else contextlib.nullcontext
        self.scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
        self.generator = torch.Generator().manual_seed(seed)
        self.stamps = Stamps()
        self.step = self.seen = 0

    def run_epoch(self, epoch: int) -> None:
        model, optimizer, scaler, clip = self.model, self.optimizer, self.scaler, self.clip
        self.stamps.start_epoch(epoch)
        model.train()
        for index in torch.randperm(len(self.x_train), generator=self.generator).split(self.batch):
            xb = self.x_train[index.to(self.device)]
            with self.autocast():
                recon = model(xb)
            loss = nn.functional.mse_loss(recon.float(), xb)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                if clip:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                if clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                scaler.step(optimizer)
                scaler.update()
            self.scheduler.step()
            self.step += 1
            if self.step % self.log_every == 0:
                loss.item()  # a hand-written loop looks at its loss now and then
            self.seen += xb.shape[0]
        self.stamps.end_epoch(epoch, self.step, self.seen)
        model.eval()
        with torch.no_grad(), self.autocast():
            for xb in self.x_val.split(self.batch):
                nn.functional.mse_loss(model(xb).float(), xb).item()
        self.stamps.end_cycle(epoch)


# -- seqae's path ----------------------------------------------------------------------------
class StepTimer(L.Callback):
    """Stamps seqae's epochs: the start and end of each one's training part, and the end of its cycle
    (validation, checkpoints, plots: everything up to the next epoch). The benchmark adds it to the
    composed callbacks. ``before_epoch`` (the plain loop's ``run_epoch``) runs at the start of each of
    seqae's epochs, outside seqae's stamps: the two sides take turns an epoch at a time."""

    last: StepTimer | None = None
    before_epoch: Callable[[int], None] | None = None

    def __init__(self) -> None:
        self.stamps = Stamps()
        self.sequences_before_epoch = 0
        StepTimer.last = self

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if epoch - 1 in self.stamps.starts:
            self.stamps.end_cycle(epoch - 1)
        if StepTimer.before_epoch is not None:
            with torch.enable_grad():
                StepTimer.before_epoch(epoch)
        self.stamps.start_epoch(epoch)
        self.sequences_before_epoch = self.stamps.sequences.get(epoch - 1, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # batch_idx is the loader index of the last batch this call took (also on the fast path); the
        # epoch's end is stamped before its validation. (A fast-path call that finds the loader empty
        # stamps it again, microseconds later.)
        if batch_idx + 1 < trainer.num_training_batches:
            return
        n_train, batch_size = len(trainer.datamodule.splits["train"]), trainer.datamodule.batch_size
        sequences = self.sequences_before_epoch + min((batch_idx + 1) * batch_size, n_train)
        self.stamps.end_epoch(trainer.current_epoch, trainer.global_step, sequences)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.stamps.starts:
            self.stamps.end_cycle(max(self.stamps.starts))


class StartupStamp(L.Callback):
    """Prints wall-clock stamps from inside a `python train.py` subprocess (the start-up section)."""

    def __init__(self) -> None:
        self._print("callbacks_built")  # train() builds data and model before its callbacks

    @staticmethod
    def _print(name: str) -> None:
        print(f"\nSEQAE_STAMP {name} {time.time():.6f}", flush=True)  # \n: the progress bar leaves none

    def on_fit_start(self, trainer, pl_module) -> None:
        self._print("fit_start")

    def on_train_start(self, trainer, pl_module) -> None:
        self._print("train_start")  # after the sanity-check validation

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0 and batch_idx == 0:
            self._print("first_step")


def seqae_fit(cfg, run_dir: Path) -> Stamps:
    """One `python train.py` fit, in-process, through ``seqae.train.train``; returns its step stamps."""
    from seqae.train import train

    set_run_dir(cfg, run_dir)
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):  # the bar renders, out of sight
        train(cfg)
    assert StepTimer.last is not None
    return StepTimer.last.stamps


def epoch_budget(epochs: int) -> list[str]:
    """The sides take turns an epoch at a time, so seqae runs a budget of whole epochs here, each
    validated on the whole validation split at its end, as the plain loop does."""
    return [
        "trainer.max_steps=-1",
        f"trainer.max_epochs={epochs}",
        "trainer.check_val_every_n_epoch=1",
        "trainer.val_check_interval=1.0",
        "trainer.limit_val_batches=1.0",
    ]


def fit_config(size: Size, threads: int, workdir: Path, extra: list[str]):
    from omegaconf import open_dict

    cfg = compose_train_config(
        [*size.overrides(), *epoch_budget(size.epochs), f"threads={threads}", "test=false", *extra],
        workdir / "round",
    )
    with open_dict(cfg):
        cfg.callbacks = cfg.callbacks or {}
        cfg.callbacks.benchmark_step_timer = {"_target_": f"{StepTimer.__module__}.StepTimer"}
    return cfg


def bench_fit(name: str, size: Size, rounds: int, threads: int, workdir: Path, extra: list[str]) -> dict:
    """Rounds of one seqae fit each, with a fresh plain loop running its epochs between seqae's."""
    from hydra.utils import instantiate

    cfg = fit_config(size, threads, workdir, extra)
    device, precision = device_and_precision(cfg)
    data = instantiate(cfg.data)
    data.setup("fit")
    loc, scale = data.normalization()
    x_train = (data.splits["train"].x - loc) / scale  # a hand-written loop normalises once, up front
    x_val = (data.splits["val"].x - loc) / scale
    per_round, pairs, rng = [], [], random.Random(0)
    for r in range(rounds):
        plain = PlainLoop(x_train, x_val, cfg, cfg.seed, device, precision)  # before train() seeds
        # each plain epoch and each seqae fit at a random stack depth: see at_stack_depth
        StepTimer.before_epoch = lambda epoch, plain=plain: at_stack_depth(
            rng.randrange(STACK_DEPTHS), partial(plain.run_epoch, epoch)
        )
        try:
            fit = partial(seqae_fit, cfg, workdir / f"{name}_round{r}")
            seqae = at_stack_depth(rng.randrange(STACK_DEPTHS), fit)
        finally:
            StepTimer.before_epoch = None
        # each of seqae's timed epochs against the plain epoch run just before it
        for e in seqae.timed_epochs():
            s, p = seqae.epoch_rates(e), plain.stamps.epoch_rates(e)
            pairs.append({k: s[k] / p[k] for k in s})
        per_round.append({"seqae": seqae.rates(), "plain": plain.stamps.rates()})
        print(
            f"  fit {name} round {r + 1}/{rounds}: seqae {per_round[-1]['seqae']['steps_per_s']:.1f} steps/s, "
            f"plain {per_round[-1]['plain']['steps_per_s']:.1f} steps/s",
            file=sys.stderr,
            flush=True,
        )

    def median(side: str, key: str) -> float:
        return statistics.median(r[side][key] for r in per_round)

    def ratio(key: str) -> float:
        return statistics.median(pair[key] for pair in pairs)

    keys = per_round[0]["seqae"].keys()
    epoch_ratios = [pair["steps_per_s"] for pair in pairs]
    return {
        "size": asdict(size),
        "threads": threads,
        "device": str(device),
        "precision": precision,
        "rounds": rounds,
        "steps_per_epoch": len(data.train_dataloader()),
        "seqae": {k: median("seqae", k) for k in keys},
        "plain": {k: median("plain", k) for k in keys},
        "epoch_pairs": len(pairs),
        "ratio": ratio("steps_per_s"),
        "ratio_interval": median_interval(epoch_ratios),
        "ratio_with_epoch_ends": ratio("steps_per_s_with_epoch_ends"),
        # each side's fastest epoch of all rounds
        "ratio_best_epochs": max(r["seqae"]["steps_per_s_best_epoch"] for r in per_round)
        / max(r["plain"]["steps_per_s_best_epoch"] for r in per_round),
        # CPU time counts only what each side computes, not the time other processes took the
        # cores from it (it includes seqae's helper threads).
        "ratio_cpu": ratio("steps_per_s_cpu"),
        "ratio_with_epoch_ends_cpu": ratio("steps_per_s_with_epoch_ends_cpu"),
        "per_round": per_round,
        "epoch_ratios": epoch_ratios,
    }


def median_interval(values: list[float], z: float = 1.96) -> tuple[float, float]:
    """An approximate 95% interval for the median of ``values``, from their order statistics (no
    assumption about their distribution): the values ``z * sqrt(n) / 2`` ranks either side of the middle."""
    ordered, n = sorted(values), len(values)
    half = z * math.sqrt(n) / 2
    return ordered[max(0, math.floor(n / 2 - half))], ordered[min(n - 1, math.ceil(n / 2 + half) - 1)]


# -- measurement bias --------------------------------------------------------------------------
STACK_DEPTHS = 64


def at_stack_depth(depth: int, fn: Callable[[], Any]) -> Any:
    """``fn()``, called ``depth`` C stack frames deeper than here.

    Why: on this machine the same oneDNN LSTM kernel on the same batches runs up to 25% slower when
    the C stack sits at certain offsets. Called 0 to 47 frames deep, three or four adjacent depths
    ran 15% to 25% slower than the rest, and which ones moved from process to process. A side always
    called from the same place could so be slow for a whole process (a seed-sized encode ratio of
    0.83x in one run, 1.03x in another). Each timing here runs at a fresh random depth, so both sides
    meet the slow offsets equally often, and the median over rounds leaves them out (the remedy of
    Mytkowicz et al., "Producing wrong data without doing anything obviously wrong!", ASPLOS 2009).
    ``map`` calls the lambda from C, so each level adds the interpreter's own C frames."""
    if depth == 0:
        return fn()
    return next(map(lambda _: at_stack_depth(depth - 1, fn), (None,)))


# -- encode ----------------------------------------------------------------------------------
def bench_encode(
    name: str, size: Size, rounds: int, threads: int, workdir: Path, extra: list[str], min_time: float = 0.05
) -> dict:
    """seqae's export path against a bare nn.LSTM forward (same weights, same batches) in inference mode,
    both from the data in its own units on the host to an array of codes on the host, in float32 on the
    device the config's Trainer would pick (scripts/encode.py's device=auto picks the same)."""
    from hydra.utils import instantiate

    from seqae.train import build_model

    cfg = compose_train_config([*size.overrides(), f"threads={threads}", *extra], workdir / "encode")
    device, _ = device_and_precision(cfg)
    data = instantiate(cfg.data)
    data.setup("fit")
    model = build_model(cfg, data.num_features)
    loc, scale = data.normalization()
    model.set_normalization(loc, scale)
    model.eval().to(device)
    loc, scale = model.norm_loc, model.norm_scale
    split = "train"
    x = data.splits[split].x
    lstm = model.encoder.lstm

    from seqae.evaluation.codes import encode_split

    path = "seqae.evaluation.codes.encode_split"

    def seqae_encode() -> None:
        encode_split(model, data, split)

    def bare_encode() -> None:  # raw data to codes: it normalises too, the whole array in one op
        with torch.inference_mode():
            xs = ((x.to(device) - loc) / scale).split(size.batch)
            torch.cat([lstm(xb)[1][0][-1] for xb in xs]).cpu().numpy()

    seqae_encode(), bare_encode()  # warm-up: oneDNN builds its primitives on first use
    # Short rounds, each side timed right after the other, the order swapped every round: the
    # machine's speed drifts within a second, so adjacent timings make the fairest pairs.
    rng = random.Random(0)

    def seconds(fn: Callable[[], None]) -> float:
        return at_stack_depth(rng.randrange(STACK_DEPTHS), partial(_seconds, fn, min_time))

    per_round = []
    for r in range(rounds):
        if r % 2:
            b, a = seconds(bare_encode), seconds(seqae_encode)
        else:
            a, b = seconds(seqae_encode), seconds(bare_encode)
        per_round.append({"seqae_s": a, "bare_s": b})
    n, ratios = x.shape[0], [r["bare_s"] / r["seqae_s"] for r in per_round]
    return {
        "size": asdict(size),
        "threads": threads,
        "device": str(device),
        "path": path,
        "sequences": n,
        "seqae_sequences_per_s": n / statistics.median(r["seqae_s"] for r in per_round),
        "bare_sequences_per_s": n / statistics.median(r["bare_s"] for r in per_round),
        "rounds": rounds,
        "ratio": statistics.median(ratios),
        "ratio_interval": median_interval(ratios),
        "per_round": per_round,
    }


def _seconds(fn, min_time: float = 0.2) -> float:
    """Seconds per call, repeating the call until at least ``min_time`` has passed. Calls go in
    doubling groups and the clock is read (after the GPU finishes) between groups only, so calls
    queue on a GPU as they would in a loop."""
    calls, group, start = 0, 1, now()[0]
    while True:
        for _ in range(group):
            fn()
        calls += group
        elapsed = now()[0] - start
        if elapsed >= min_time:
            return elapsed / calls
        group *= 2


# -- scaling ---------------------------------------------------------------------------------
def model_flops_per_step(f: int, h: int, t: int, b: int) -> float:
    """Training FLOPs of PlainAutoencoder per step: 2*4*H*(in+H) per LSTM step, x3 for fwd+bwd."""
    encoder = 2 * 4 * h * (f + h)
    decoder = 2 * 4 * h * (h + h)
    linear = 2 * h * f
    return 3.0 * b * t * (encoder + decoder + linear)


def bench_scaling(
    base: Size, doublings: int, sequences: int, min_time: float, device: torch.device
) -> list[dict]:
    """A hand-written float32 training step as T, B and H double from ``base``, against torch.mm at the
    LSTM's GEMM shapes, on ``device``."""
    configs = [("base", base.seq_len, base.batch, base.hidden)]
    for k in range(1, doublings + 1):
        m = 2**k
        configs += [
            (f"seq x{m}", base.seq_len * m, base.batch, base.hidden),
            (f"batch x{m}", base.seq_len, base.batch * m, base.hidden),
            (f"hidden x{m}", base.seq_len, base.batch, base.hidden * m),
        ]
    rows = []
    for label, t, b, h in configs:
        torch.manual_seed(0)
        model = PlainAutoencoder(base.input, h).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.randn(b, t, base.input, device=device)

        def step(model=model, optimizer=optimizer, x=x) -> None:
            loss = nn.functional.mse_loss(model(x), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        step()
        seconds = _seconds(step, min_time)
        flops = model_flops_per_step(base.input, h, t, b)
        rows.append(
            {
                "config": label,
                "device": str(device),
                "seq_len": t,
                "batch": b,
                "hidden": h,
                "ms_per_step": 1e3 * seconds,
                "s_per_epoch": seconds * -(-sequences // b),
                "model_gflops": flops / seconds / 1e9,
                "recurrent_gemm_gflops": _gemm_gflops(b, h, 4 * h, min_time / 4, device),
                "input_gemm_gflops": _gemm_gflops(b * t, base.input, 4 * h, min_time / 4, device),
            }
        )
    return rows


def _gemm_gflops(m: int, k: int, n: int, min_time: float, device: torch.device) -> float:
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    torch.mm(a, b)
    return 2.0 * m * k * n / _seconds(lambda: torch.mm(a, b), min_time) / 1e9


# -- start-up --------------------------------------------------------------------------------
# Two steps and one validation (without one, early stopping would wait for val/loss in vain), so
# the run also exits quickly after the stamp we want.
STARTUP_OVERRIDES = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "test=false",
]


def bench_startup(workdir: Path, extra: list[str], quick: bool = False) -> dict:
    """`python train.py` in a subprocess until its first training step, and what it spends the time on."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    stamp_callback = "+callbacks.benchmark_startup._target_=benchmark.StartupStamp"

    def run(tag: str, *python_flags: str) -> tuple[float, dict[str, float], str]:
        args = [*STARTUP_OVERRIDES, *extra, f"hydra.run.dir={workdir / tag}", stamp_callback]
        start = time.time()
        proc = subprocess.run(
            [sys.executable, *python_flags, str(ROOT / "train.py"), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"python train.py {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
        stamps = {
            m.group(1): float(m.group(2)) - start
            for m in re.finditer(r"^SEQAE_STAMP (\w+) ([\d.]+)$", proc.stdout, re.MULTILINE)
        }
        return start, stamps, proc.stderr

    # -X importtime slows imports a little, so the total comes from a run without it (not in --quick).
    _, importtime_stamps, importtime = run("importtime", "-X", "importtime")
    stamps = importtime_stamps if quick else run("plain")[1]
    imports = _import_seconds(importtime)

    # Composition and data/model build, timed in this process (modules already imported).
    from hydra.utils import instantiate

    from seqae.train import build_model

    t0 = time.perf_counter()
    cfg = compose_train_config([*STARTUP_OVERRIDES, *extra], workdir / "compose")
    t1 = time.perf_counter()
    data = instantiate(cfg.data)
    data.setup("fit")
    t2 = time.perf_counter()
    model = build_model(cfg, data.num_features)
    model.set_normalization(*data.normalization())
    t3 = time.perf_counter()
    python_start = _seconds_for([sys.executable, "-c", "pass"])
    return {
        "command": f"python train.py {' '.join([*STARTUP_OVERRIDES, *extra])}",
        "to_first_step_s": stamps["first_step"],
        "stamps_s": stamps,
        "breakdown_s": {
            "python interpreter": python_start,
            "imports (all, -X importtime)": imports.pop("all"),
            **{f"  import {k} (with what it imports first)": v for k, v in imports.items()},
            "compose config": t1 - t0,
            "build data": t2 - t1,
            "build model": t3 - t2,
            "Trainer + fit set-up + sanity check": stamps["first_step"] - stamps["callbacks_built"],
            "  of which sanity-check validation": stamps["train_start"] - stamps["fit_start"],
        },
    }


IMPORTS_OF_NOTE = ("hydra", "seqae", "torch", "lightning", "torchmetrics", "tensorboard", "matplotlib")


def _import_seconds(importtime_stderr: str) -> dict[str, float]:
    """From ``python -X importtime``: all imports, and each package of note with what it pulled in first
    (nested, so they overlap: ``seqae`` includes the torch and lightning it was first to import)."""
    total, first = 0.0, {}
    for m in re.finditer(r"^import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$", importtime_stderr, re.MULTILINE):
        seconds, nested, name = int(m.group(1)) / 1e6, m.group(2), m.group(3)
        if len(nested) == 1:  # top level: the column holds 1 + 2 x nesting spaces before the name
            total += seconds
        if name in IMPORTS_OF_NOTE and name not in first:
            first[name] = seconds
    return {"all": total, **first}


def _seconds_for(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


# -- report ----------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
    }


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, load average at start {m['load_average']}; "
        f"torch {m['torch']}, lightning {m['lightning']}, Python {m['python']}.",
        f"Command: `{results['command']}`",
        "",
    ]
    if results.get("fit"):
        lines += [
            "| fit | device, precision | threads | seqae steps/s | plain steps/s | seqae seq/s | plain seq/s "
            "| ratio | each process | epoch pairs | best epochs' ratio | ratio with epoch ends | CPU-time ratio "
            "| CPU-time ratio with epoch ends |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in results["fit"].items():
            s, p = r["seqae"], r["plain"]
            lines.append(
                f"| {name} ({_shape(r['size'])}) | {r['device']}, {r['precision']} | {r['threads']} "
                f"| {s['steps_per_s']:.1f} | {p['steps_per_s']:.1f} | {s['sequences_per_s']:.0f} "
                f"| {p['sequences_per_s']:.0f} | **{r['ratio']:.3f}x** | {_each(r)} | {r['epoch_pairs']} "
                f"| {r['ratio_best_epochs']:.3f}x | {r['ratio_with_epoch_ends']:.3f}x | {r['ratio_cpu']:.3f}x "
                f"| {r['ratio_with_epoch_ends_cpu']:.3f}x |"
            )
        lines.append("")
    if results.get("encode"):
        lines += [
            "| encode | device | seqae seq/s | bare LSTM seq/s | ratio | each process | rounds | seqae path |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in results["encode"].items():
            lines.append(
                f"| {name} ({_shape(r['size'])}) | {r['device']} | {r['seqae_sequences_per_s']:.0f} "
                f"| {r['bare_sequences_per_s']:.0f} | **{r['ratio']:.3f}x** | {_each(r)} "
                f"| {r['rounds']} | {r['path']} |"
            )
        lines.append("")
    if results.get("scaling"):
        lines += [
            f"| scaling ({results['scaling'][0]['device']}, float32) | T | B | H | ms/step | s/epoch | model GFLOP/s | GEMM GFLOP/s [B,H]x[H,4H] | GEMM GFLOP/s [BT,F]x[F,4H] |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["scaling"]:
            lines.append(
                f"| {r['config']} | {r['seq_len']} | {r['batch']} | {r['hidden']} | {r['ms_per_step']:.2f} "
                f"| {r['s_per_epoch']:.2f} | {r['model_gflops']:.1f} | {r['recurrent_gemm_gflops']:.1f} "
                f"| {r['input_gemm_gflops']:.1f} |"
            )
        lines.append("")
    if results.get("startup"):
        s = results["startup"]
        lines += [
            f"Start-up: `{s['command']}` reaches its first training step after **{s['to_first_step_s']:.2f} s**.",
            "",
            "| start-up part | seconds |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v:.3f} |" for k, v in s["breakdown_s"].items()]
        lines.append("")
    return "\n".join(lines)


def _each(row: dict) -> str:
    return ", ".join(f"{ratio:.3f}" for ratio in row["process_ratios"])


def _shape(size: dict) -> str:
    return f"in {size['input']}, hidden {size['hidden']}, seq {size['seq_len']}, batch {size['batch']}"


# -- several processes ------------------------------------------------------------------------
def default_rounds(quick: bool, size: str) -> dict[str, int]:
    """Rounds per process. Each round of fit is one seqae fit (5 timed epoch pairs at the seed size, 2 at
    the realistic size); each round of encode times each side for at least 0.05 s."""
    if quick:
        return {"fit": 1, "encode": 2}
    return {"fit": 1, "encode": 4} if size == "realistic" else {"fit": 4, "encode": 100}


def in_processes(sections: list[str], args: argparse.Namespace, threads: int, workdir: Path) -> dict:
    """The fit and encode comparisons, run in ``args.processes`` fresh interpreters one after another.

    Why: what a process's memory layout does to one side's speed lasts as long as the process. Random
    stack depths (``at_stack_depth``) spread the part of it that was found; the median over fresh
    processes, each with its own layout, guards against the rest. Every process's ratio is reported
    next to the median."""
    runs = []
    for i in range(args.processes):
        out = workdir / f"process{i}.json"
        cmd = [sys.executable, __file__, "--processes", "1", "--only", ",".join(sections)]
        cmd += ["--sizes", ",".join(args.sizes), "--threads", str(threads), "--out", str(out)]
        cmd += [
            *(["--quick"] if args.quick else []),
            *(["--rounds", str(args.rounds)] if args.rounds else []),
        ]
        print(f"process {i + 1}/{args.processes}", file=sys.stderr, flush=True)
        subprocess.run([*cmd, *args.overrides], check=True, stdout=subprocess.DEVNULL)  # its progress: stderr
        runs.append(json.loads(out.read_text()))
    return {
        section: {
            name: merge_processes([r[section][name]["processes"][0] for r in runs]) for name in args.sizes
        }
        for section in sections
    }


def merge_processes(runs: list[dict]) -> dict:
    """One table row from each process's result: the median of every rate and ratio, the rounds and
    epoch pairs summed, and each process's ratio; the processes' own results are kept whole."""

    def median_of(key: str) -> Any:
        values = [r[key] for r in runs]
        if isinstance(values[0], dict):
            return {k: statistics.median(v[k] for v in values) for k in values[0]}
        return statistics.median(values)

    merged = {k: v for k, v in runs[0].items() if isinstance(v, (int, str)) or k == "size"}
    merged.update({k: median_of(k) for k, v in runs[0].items() if isinstance(v, float)})
    merged.update({k: median_of(k) for k in ("seqae", "plain") if k in runs[0]})
    merged.update({k: sum(r[k] for r in runs) for k in ("rounds", "epoch_pairs") if k in runs[0]})
    merged["process_ratios"] = [r["ratio"] for r in runs]
    merged["processes"] = runs
    return merged


# -- main ------------------------------------------------------------------------------------
SECTIONS = ("fit", "encode", "scaling", "startup")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and 2 rounds: a smoke run in seconds")
    p.add_argument(
        "--sizes", default=None, help=f"comma-separated, of {sorted(SIZES)} (default: seed,realistic)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds per size and process (fit: default 4, realistic 1; encode: 100, realistic 4)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        help="fresh processes to run the fit and encode comparisons in, one after another; the tables "
        "give the median over them (default 3, --quick 1)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the config's `threads`)"
    )
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument(
        "overrides",
        nargs="*",
        help="extra train.py overrides, e.g. trainer=gpu trainer.precision=bf16-mixed (scaling: device only)",
    )
    args = p.parse_args(argv)
    sizes = (args.sizes or ("tiny" if args.quick else "seed,realistic")).split(",")
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        p.error(f"--sizes: unknown size(s) {unknown}; choose from {sorted(SIZES)}.")
    only = args.only.split(",")
    if bad := [s for s in only if s not in SECTIONS]:
        p.error(f"--only: unknown section(s) {bad}; choose from {SECTIONS}.")
    if args.rounds is not None and args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}.")
    if args.processes is not None and args.processes < 1:
        p.error(f"--processes must be at least 1, got {args.processes}.")
    args.processes = args.processes or (1 if args.quick else 3)
    args.sizes, args.only = sizes, only
    return args


def resolve_threads(requested: int | None, overrides: list[str]) -> int:
    """The thread count train.py would use: --threads, else the config's `threads`, else torch's default."""
    if requested:
        return requested
    with tempfile.TemporaryDirectory() as tmp:
        threads = compose_train_config(overrides, Path(tmp)).get("threads")
    return int(threads) if threads else torch.get_num_threads()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")  # Lightning's advice on workers and loggers, once per round
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    threads = resolve_threads(args.threads, args.overrides)
    torch.set_num_threads(threads)  # both sides of every comparison run on the same thread count
    results: dict[str, Any] = {
        "command": "python scripts/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
    }
    with tempfile.TemporaryDirectory(prefix="seqae-bench-") as tmp:
        workdir = Path(tmp)
        compared = [s for s in ("fit", "encode") if s in args.only]
        if compared and args.processes > 1:
            results.update(in_processes(compared, args, threads, workdir))
        elif compared:
            results.update({section: {} for section in compared})
            for name in args.sizes:
                rounds = default_rounds(args.quick, name)
                rounds = dict.fromkeys(rounds, args.rounds) if args.rounds else rounds
                if "fit" in compared:
                    run = bench_fit(name, SIZES[name], rounds["fit"], threads, workdir, args.overrides)
                    results["fit"][name] = merge_processes([run])
                if "encode" in compared:
                    run = bench_encode(name, SIZES[name], rounds["encode"], threads, workdir, args.overrides)
                    results["encode"][name] = merge_processes([run])
        if "scaling" in args.only:
            base = SIZES["tiny"] if args.quick else Size(10, 64, 50, 32, 2048, 1)  # the default model
            cfg = compose_train_config([*base.overrides(), *args.overrides], workdir / "scaling")
            results["scaling"] = bench_scaling(
                base,
                doublings=1 if args.quick else 2,
                sequences=base.sequences,
                min_time=0.05 if args.quick else 0.5,
                device=device_and_precision(cfg)[0],
            )
        if "startup" in args.only:
            extra = [*args.overrides, *([] if not args.quick else SIZES["tiny"].overrides())]
            results["startup"] = bench_startup(workdir, extra, quick=args.quick)
    table = markdown(results)
    results["markdown"] = table
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()

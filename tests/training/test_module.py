from __future__ import annotations

import contextlib

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from seqae.data import SinesDataModule
from seqae.models.layers import reverse_valid_steps
from seqae.training.module import SequenceAutoencoder
from tests.conftest import needs_cuda, quiet_trainer, recurrent

DENOISING = "seqae.models.objectives.denoising.Denoising"


def tiny_data(**kwargs) -> SinesDataModule:
    args = dict(num_sequences=96, seq_len=12, num_features=3, batch_size=16)
    return SinesDataModule(**{**args, **kwargs})


def batch_bytes(dm: SinesDataModule) -> int:
    dm.setup("fit")
    return sum(v.nbytes for v in next(iter(dm.train_dataloader())).values())


def test_fast_dev_run_fits_validates_and_tests(tmp_path):
    dm = tiny_data()
    model = SequenceAutoencoder(input_size=3, **recurrent(8))
    trainer = quiet_trainer(tmp_path, fast_dev_run=True)
    trainer.fit(model, datamodule=dm)
    assert {"train/loss", "val/loss", "val/mse", "val/mae"} <= set(trainer.callback_metrics)
    trainer.test(model, datamodule=dm, verbose=False)
    assert {"test/loss", "test/mse", "test/mae"} <= set(trainer.callback_metrics)


def test_a_short_fit_lowers_the_validation_loss(tmp_path):
    torch.manual_seed(0)
    dm = tiny_data(num_sequences=512)
    dm.setup("fit")
    model = SequenceAutoencoder(input_size=3, **recurrent(16), lr=0.01)
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
    model = SequenceAutoencoder(input_size=3, **recurrent(8, num_layers=2, readout="cell", latent_size=5))
    model.set_normalization(*dm.normalization())
    trainer = quiet_trainer(tmp_path, max_epochs=2, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    expected = trainer.test(model, datamodule=dm, verbose=False)[0]["test/loss"]
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    assert isinstance(torch.load(path, weights_only=True)["hyper_parameters"], dict)  # no pickled objects
    loaded = SequenceAutoencoder.load(path)  # weights_only=True
    assert loaded.hparams.encoder["readout"] == "cell" and loaded.encoder.code_size == 5
    torch.testing.assert_close(loaded.norm_scale, model.norm_scale)  # normalisation travels along
    again = quiet_trainer(tmp_path).test(loaded, datamodule=dm, verbose=False)[0]["test/loss"]
    assert again == pytest.approx(expected, rel=1e-6)


def test_encode_takes_original_units():
    model = SequenceAutoencoder(input_size=2, **recurrent(4)).eval()
    x = torch.randn(3, 5, 2)
    model.set_normalization(torch.tensor([10.0, -3.0]), torch.tensor([2.0, 0.5]))
    shifted = x * torch.tensor([2.0, 0.5]) + torch.tensor([10.0, -3.0])
    given = shifted.clone()
    torch.testing.assert_close(model.encode(shifted), model.encoder(x))
    assert torch.equal(shifted, given)  # the caller's data is left as it was
    # gradients reach the inputs through the normalisation (saliency, input optimisation)
    shifted.requires_grad_(True)
    x.requires_grad_(True)
    model.encode(shifted).sum().backward()
    model.encoder(x).sum().backward()
    torch.testing.assert_close(shifted.grad, x.grad / torch.tensor([2.0, 0.5]))  # x = (shifted - loc) / scale


@pytest.mark.parametrize(("kwargs", "message"), [({"scheduler": "step"}, "scheduler"), ({"lr": 0}, "lr")])
def test_bad_hyper_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SequenceAutoencoder(input_size=2, **kwargs)


class Oracle(torch.nn.Module):
    """A decoder that emits a fixed answer, to check what the model does around the decoder."""

    def __init__(self, answer: torch.Tensor) -> None:
        super().__init__()
        self.answer = answer

    def forward(self, code, seq_len, target=None):
        return self.answer


def test_reverse_target_trains_on_the_reversed_input_and_reconstructs_in_original_order():
    x = torch.randn(3, 6, 2) * 5 + 2
    lengths = torch.tensor([6, 4, 2])
    model = SequenceAutoencoder(input_size=2, **recurrent(4), reverse_target=True)
    model.set_normalization(torch.tensor([2.0, 2.0]), torch.tensor([5.0, 5.0]))
    # a perfect decoder of a reversing model emits the normalised input backwards
    model.decoder = Oracle(reverse_valid_steps(model.normalize(x), lengths))
    assert model.training_step({"x": x, "lengths": lengths}, 0).item() == pytest.approx(0.0, abs=1e-10)
    recon = model(x, lengths)
    valid = torch.arange(6) < lengths.unsqueeze(-1)
    torch.testing.assert_close(recon[valid], x[valid])  # original order and units


def test_long_series_are_read_in_patches_by_encoder_and_decoder():
    """max_recurrent_steps=4 on 10-step series: patches of 3 steps, 4 recurrent steps each way."""
    model = SequenceAutoencoder(
        input_size=2, **recurrent(4), sequence_length=10, max_recurrent_steps=4
    ).eval()
    assert (
        model.patch_size == 3 and model.encoder.lstm.input_size == 6 and model.decoder.out.out_features == 6
    )
    x, lengths = torch.randn(3, 10, 2), torch.tensor([10, 7, 2])
    steps = []
    model.encoder.lstm.register_forward_hook(lambda m, args, out: steps.append(args[0].shape[1]))
    model.decoder.lstm.register_forward_hook(lambda m, args, out: steps.append(args[0].shape[1]))
    assert model(x, lengths).shape == x.shape and steps == [4, 4]
    # a padded batch gives each series the code it has alone (padding stays out of its patches)
    x[1, 7:], x[2, 2:] = 0.0, 0.0
    alone = torch.cat([model.encode(x[i : i + 1, : lengths[i]]) for i in range(3)])
    torch.testing.assert_close(model.encode(x, lengths), alone, atol=1e-6, rtol=1e-5)
    short = SequenceAutoencoder(input_size=2, **recurrent(4), sequence_length=4, max_recurrent_steps=4)
    assert short.patch_size == 1  # series no longer than the limit are read step by step


def test_instance_norm_puts_each_series_level_and_scale_in_the_code_and_back():
    torch.manual_seed(0)
    model = SequenceAutoencoder(input_size=2, **recurrent(4, readout="pooled"), instance_norm=True).eval()
    assert model.code_size == 3 * 4 + 2 * 2
    x = torch.randn(3, 8, 2)
    code = model.encode(x)
    moved = model.encode(x * 10.0 + 5.0)  # the same shapes at another level and scale
    torch.testing.assert_close(moved[:, :12], code[:, :12], atol=1e-5, rtol=1e-4)  # the recurrent part
    torch.testing.assert_close(moved[:, 12:14], code[:, 12:14] * 10 + 5)  # each series' mean
    torch.testing.assert_close(moved[:, 14:], code[:, 14:] + torch.tensor(10.0).log())  # its log std
    # a perfect decoder of the scaled series gives back the series in original units
    shape, _ = model.scale_series(model.normalize(x), None)
    model.decoder = Oracle(shape)
    torch.testing.assert_close(model(x), x, atol=1e-5, rtol=1e-5)
    target, recon = model.reconstruction(x)
    torch.testing.assert_close(target, shape)
    torch.testing.assert_close(recon, shape)
    assert target.var(dim=1, unbiased=False).mean().item() == pytest.approx(1.0, rel=1e-4)


def test_an_objective_corrupts_what_the_encoder_sees_and_adds_its_loss():
    denoising = {"_target_": "seqae.models.objectives.denoising.Denoising", "mask": 0.5}
    model = SequenceAutoencoder(input_size=2, **recurrent(4), objective=denoising)
    seen = []
    model.encoder.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    x = torch.randn(4, 10, 2) + 3.0
    model.training_loss({"x": x})
    assert (seen[0] == 0).all(dim=-1).float().mean().item() == pytest.approx(0.5, abs=0.25)  # steps zeroed
    dtcr = SequenceAutoencoder(
        input_size=2,
        **recurrent(4),
        objective={"_target_": "seqae.models.objectives.fake_samples.FakeSamples"},
    )
    plain = SequenceAutoencoder(input_size=2, **recurrent(4))
    plain.load_state_dict({k: v for k, v in dtcr.state_dict().items() if not k.startswith("objective.")})
    torch.manual_seed(1)
    with_fakes, _ = dtcr.training_loss({"x": x})
    alone, _ = plain.training_loss({"x": x})
    assert with_fakes.item() > alone.item()  # the classifier's loss joins the reconstruction's
    assert any(k.startswith("objective.head.") for k in dtcr.state_dict())  # the head is checkpointed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"objective": {"_target_": "seqae.models.objectives.contrastive.Contrastiv"}},
            r"objective._target_='seqae.models.objectives.contrastive.Contrastiv': the module has no Contrastiv",
        ),
        ({"objective": {"_target_": DENOISING, "mask": 2.0}}, "mask must be in"),
        (
            {"objective": {"_target_": DENOISING, "masking": 0.2}},
            r"objective: seqae.models.objectives.denoising.Denoising\(code_size, masking\) failed",
        ),
        (
            {"objective": {"_target_": "torch.nn.Identity"}},
            "must subclass seqae.models.objectives.Objective",
        ),
        ({"max_recurrent_steps": 0}, "model.max_recurrent_steps must be a positive integer or null"),
    ],
)
def test_bad_objectives_and_patches_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SequenceAutoencoder(input_size=2, **kwargs)


def test_pinned_loss_of_the_default_model(tmp_path):
    """A silent change to the encoder, decoder, loss, data or optimiser moves this number.

    If you changed one of them on purpose, check the change and re-pin the value.
    """
    L.seed_everything(1234, verbose=False)
    dm = tiny_data(num_sequences=64, seed=1234)
    dm.setup("fit")
    model = SequenceAutoencoder(input_size=3, **recurrent(8), lr=0.003, scheduler="cosine")
    model.set_normalization(*dm.normalization())
    trainer = quiet_trainer(tmp_path, max_steps=6, deterministic=True, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    loss = trainer.validate(model, datamodule=dm, verbose=False)[0]["val/loss"]
    assert loss == pytest.approx(PINNED_VAL_LOSS, rel=1e-4)


PINNED_VAL_LOSS = 0.94544524  # measured with torch 2.13.0 CPU


def loss_scaled_float32(subclass: bool) -> MixedPrecision:
    """16-mixed's loss scaling (a GradScaler starting at 2**16) around float32 math: CPUs have no fp16
    LSTM kernels, but the scaler is what decides where clipping must happen. The fast path does the
    scaler's work itself for Lightning's own MixedPrecision (``subclass=False``), and leaves it to
    Lightning's wrappers for a plugin of another class."""

    class LossScaledFloat32(MixedPrecision):
        pass

    plugin = (LossScaledFloat32 if subclass else MixedPrecision)(
        "16-mixed", "cpu", torch.amp.GradScaler("cpu")
    )
    plugin.forward_context = contextlib.nullcontext  # no autocast
    return plugin


@pytest.mark.parametrize(
    ("scheduler", "precision"),
    [
        ("cosine", "32-true"),
        ("plateau", "32-true"),
        ("cosine", "64-true"),  # Lightning's wrappers instead of the lean path
        ("cosine", "loss-scaled"),  # 16-mixed's scaler: gradients are clipped after unscaling
        ("cosine", "loss-scaled, Lightning's wrappers"),
        ("cosine", "32-true, large batches"),  # fetched in groups smaller than a call
        pytest.param("cosine", "cuda 16-mixed", marks=needs_cuda),
        pytest.param("cosine", "cuda bf16-mixed", marks=needs_cuda),
    ],
)
def test_several_steps_per_call_train_exactly_as_one_step_per_call(
    tmp_path, monkeypatch, scheduler, precision
):
    """The fast path (steps_per_call > 1, manual optimization) makes the same optimizer steps on the
    same batches, clipping and scheduling as Lightning's automatic optimization does."""
    if precision.endswith("large batches"):  # as if two of them filled FETCH_AHEAD_BYTES
        monkeypatch.setattr(
            "seqae.training.fast_path.FETCH_AHEAD_BYTES", 2 * batch_bytes(tiny_data(num_sequences=120))
        )
        precision = precision.removesuffix(", large batches")
    runs = []
    for steps_per_call in (1, 3):
        torch.manual_seed(0)
        dm = tiny_data(num_sequences=120)  # 96 train sequences: 6 batches, so the last call takes 0 of 3
        args = dict(input_size=3, **recurrent(8), lr=0.05, scheduler=scheduler, gradient_clip_val=0.5)
        model = SequenceAutoencoder(**args, steps_per_call=steps_per_call)
        if precision.startswith("loss-scaled"):
            how = {"plugins": [loss_scaled_float32(subclass="wrappers" in precision)]}
        elif precision.startswith("cuda "):
            how = {"accelerator": "gpu", "devices": 1, "precision": precision.removeprefix("cuda ")}
        else:
            how = {"precision": precision}
        trainer = quiet_trainer(tmp_path, max_epochs=3, enable_checkpointing=False, **how)
        trainer.fit(model, datamodule=dm)
        runs.append((model, trainer))
    (slow, slow_trainer), (fast, fast_trainer) = runs
    assert fast_trainer.global_step == slow_trainer.global_step == 3 * 6
    # logging steps count optimizer steps too, so TensorBoard's step axis is the same
    assert fast_trainer.fit_loop.epoch_loop._batches_that_stepped == 3 * 6
    assert fast.optimizers().param_groups[0]["lr"] == pytest.approx(slow.optimizers().param_groups[0]["lr"])
    if scaler := fast_trainer.precision_plugin.scaler if precision.startswith(("loss", "cuda 16")) else None:
        # the loss was scaled and the scale updated after every step, as Lightning does it
        assert scaler.state_dict() == slow_trainer.precision_plugin.scaler.state_dict()
        assert scaler.state_dict()["_growth_tracker"] == 3 * 6
    # on a GPU, cuDNN may pick other kernels (and summation orders) for the two runs
    tol = {"rtol": 1e-4, "atol": 1e-5} if precision.startswith("cuda ") else {}
    for (name, a), b in zip(slow.state_dict().items(), fast.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name, **tol)


def test_steps_per_call_must_be_a_positive_integer():
    with pytest.raises(ValueError, match=r"model\.steps_per_call must be a positive integer, got 0"):
        SequenceAutoencoder(input_size=3, steps_per_call=0)
    with pytest.raises(ValueError, match=r"model\.gradient_clip_val must be a positive number or null"):
        SequenceAutoencoder(input_size=3, gradient_clip_val=-1.0)


def test_several_steps_per_call_log_train_loss_at_the_same_optimizer_steps(tmp_path):
    """TensorBoard's step axis (and log_every_n_steps) counts optimizer steps whatever steps_per_call is."""
    import csv

    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger

    logged, losses, lr_logged = {}, {}, {}
    for steps_per_call in (1, 3, 5):  # 5 does not divide log_every_n_steps: calls end early to keep step
        torch.manual_seed(0)
        logger = CSVLogger(tmp_path, name=f"k{steps_per_call}", version="")
        model = SequenceAutoencoder(input_size=3, **recurrent(8), steps_per_call=steps_per_call)
        # the learning-rate monitor logs before a logging step, in on_train_batch_start
        lr_monitor = LearningRateMonitor(logging_interval="step")
        trainer = quiet_trainer(
            tmp_path, max_epochs=2, logger=logger, log_every_n_steps=3, callbacks=[lr_monitor]
        )
        trainer.fit(model, datamodule=tiny_data(num_sequences=120))
        with open(tmp_path / f"k{steps_per_call}" / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        logged[steps_per_call] = [int(r["step"]) for r in rows if r.get("train/loss")]
        losses[steps_per_call] = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
        lr_logged[steps_per_call] = [int(r["step"]) for r in rows if r.get("lr-Adam")]
    assert logged[5] == logged[3] == logged[1] == [2, 5, 8, 11]
    assert lr_logged[5] == lr_logged[3] == lr_logged[1] == [2, 5, 8, 11]
    # each written value is that call's own loss, not one left over from an earlier call
    assert len(set(losses[5])) == len(losses[5])


@pytest.mark.parametrize(
    "val_check_interval, validated, also_at_epoch_ends",
    [
        (2, [1, 3, 5, 7, 9, 11, 13, 15, 17], []),  # batches 2, 4 and 6 of each epoch
        (0.5, [2, 5, 8, 11, 14, 17], []),  # every 3 batches
        (4, [3, 9, 15], [5, 11, 17]),  # batch 4 only; Lightning validates a dataloader_iter fit's ends
    ],
)
def test_several_steps_per_call_validate_and_checkpoint_at_the_same_steps(
    tmp_path, val_check_interval, validated, also_at_epoch_ends
):
    """A call ends where Lightning acts on a batch or step count, so val_check_interval and
    every_n_train_steps checkpoints happen at the steps they happen at with one step per call.
    An interval that does not divide the epoch also validates at its end (README, Performance)."""
    import csv

    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    seen = {}
    for steps_per_call in (1, 3, 5):
        torch.manual_seed(0)
        run = tmp_path / f"k{steps_per_call}"
        every_5 = ModelCheckpoint(run, filename="s{step}", every_n_train_steps=5, save_top_k=-1)
        trainer = quiet_trainer(
            tmp_path,
            max_epochs=3,
            logger=CSVLogger(run, name="", version=""),
            callbacks=[every_5],
            val_check_interval=val_check_interval,
            log_every_n_steps=100,
        )
        model = SequenceAutoencoder(input_size=3, **recurrent(8), steps_per_call=steps_per_call)
        trainer.fit(model, datamodule=tiny_data(num_sequences=120))  # 6 batches an epoch
        with open(run / "metrics.csv") as f:
            val = [(int(r["step"]), float(r["val/loss"])) for r in csv.DictReader(f) if r.get("val/loss")]
        seen[steps_per_call] = val, {p.name for p in run.glob("*.ckpt")}
    assert [step for step, _ in seen[1][0]] == validated
    assert seen[1][1] == {f"sstep={s}.ckpt" for s in (5, 10, 15)}
    for fast in (seen[3], seen[5]):
        assert [step for step, _ in fast[0]] == sorted(validated + also_at_epoch_ends)
        assert [v for v in fast[0] if v[0] in validated] == seen[1][0]  # the same losses at those steps
        assert fast[1] == seen[1][1]


@pytest.mark.parametrize("group_batches", [8, 1])
def test_a_non_finite_loss_in_the_middle_of_a_call_names_its_own_step(tmp_path, monkeypatch, group_batches):
    """The fast path looks at its losses once per group of fetched batches (the whole call, unless the
    batches are large); the report still names the step that failed."""
    monkeypatch.setattr(
        "seqae.training.fast_path.FETCH_AHEAD_BYTES", group_batches * batch_bytes(tiny_data())
    )
    dm = tiny_data(num_sequences=120)  # 96 train sequences: 6 batches, one call of 6 steps
    dm.setup("fit")
    fourth_batch = list(dm.train_dataloader().sampler)[3]  # epoch 0's order (seed and epoch fix it)
    dm.splits["train"].x[fourth_batch[0]] = float("inf")
    model = SequenceAutoencoder(input_size=3, **recurrent(8), steps_per_call=8)
    trainer = quiet_trainer(tmp_path, max_epochs=1, enable_checkpointing=False)
    with pytest.raises(
        FloatingPointError, match=r"at epoch 0, global step 3\. Batch inputs x: 36 non-finite"
    ):
        trainer.fit(model, datamodule=dm)


def test_validation_metrics_are_each_epochs_own(tmp_path):
    """val/mse is the MSE over that epoch's validation batches alone: equal-length sequences and the
    repeat decoder make it val/loss (a batch-size-weighted mean of batch MSEs), epoch after epoch,
    also after a validate() (inference mode) before the fit (no_grad); test/mse likewise."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    model, dm = SequenceAutoencoder(input_size=3, **recurrent(8), lr=0.05), tiny_data(num_sequences=400)
    quiet_trainer(tmp_path).validate(model, datamodule=dm, verbose=False)
    trainer = quiet_trainer(tmp_path, max_epochs=3, logger=CSVLogger(tmp_path, name="m", version=""))
    trainer.fit(model, datamodule=dm)  # validation batches of 16, 16 and 8
    with open(tmp_path / "m" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/mse")]
    assert len(rows) == 3
    assert len({r["val/loss"] for r in rows}) == 3  # the model moved between epochs
    for r in rows:
        assert float(r["val/mse"]) == pytest.approx(float(r["val/loss"]), rel=1e-5)
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert tested["test/mse"] == pytest.approx(tested["test/loss"], rel=1e-5)

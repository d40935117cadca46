"""Instance contrast: random crops of each series' valid steps, and a loss that rewards telling series apart."""

from __future__ import annotations

import torch

from seqae.models.objectives.contrastive import Contrastive, random_crops
from seqae.training.module import SequenceAutoencoder
from tests.conftest import recurrent

CONTRASTIVE = {"_target_": "seqae.models.objectives.contrastive.Contrastive"}


def test_crops_are_contiguous_runs_of_valid_steps_moved_to_the_start():
    torch.manual_seed(0)
    x = torch.arange(3 * 40, dtype=torch.float32).view(3, 40, 1)
    lengths = torch.tensor([40, 20, 9])
    for _ in range(20):
        crops, sizes = random_crops(x, lengths, 0.5)
        for i, (n, size) in enumerate(zip(lengths.tolist(), sizes.tolist(), strict=True)):
            assert (n + 1) // 2 <= size <= n
            values = crops[i, :size, 0]
            assert torch.equal(values, values[0] + torch.arange(size, dtype=torch.float32))  # contiguous
            assert values[0] >= x[i, 0, 0] and values[-1] <= x[i, n - 1, 0]  # inside the valid steps
            assert (crops[i, size:] == 0).all()


def test_the_loss_is_lower_when_crops_of_one_series_share_a_code():
    objective = Contrastive(code_size=6, temperature=0.1)
    torch.manual_seed(0)
    x = torch.randn(6, 30, 1)
    identity = torch.eye(6)

    def by_series(crops, lengths):  # a code that knows which series a crop came from
        return torch.stack([identity[(x[:, :, 0] == c[0, 0]).any(1).nonzero()[0, 0]] for c in crops])

    def blind(crops, lengths):  # one code for everything
        return torch.ones(len(crops), 6)

    code = torch.zeros(6, 6)
    assert objective.extra_loss(by_series, x, None, code) < objective.extra_loss(blind, x, None, code)
    assert objective.extra_loss(blind, x[:1], None, code[:1]) is None  # nothing to contrast with


def test_the_series_own_statistics_are_left_out_of_the_contrast():
    model = SequenceAutoencoder(2, **recurrent(4), instance_norm=True, objective=CONTRASTIVE)
    assert model.objective.stats_size == 4  # [mean, log std] per feature
    torch.manual_seed(0)
    loss, _ = model.training_loss({"x": torch.randn(5, 12, 2)})
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.lstm.weight_ih_l0.grad.abs().sum() > 0

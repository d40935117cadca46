"""TS2Vec's hierarchical contrast: overlapping crops whose shared steps line up, and a loss that rewards
outputs that agree across crops and tell series and steps apart."""

from __future__ import annotations

import pytest
import torch

from seqae.errors import ConfigError
from seqae.models.objectives.hierarchical import (
    HierarchicalContrast,
    hierarchical_loss,
    instance_contrast,
    overlapping_crops,
    temporal_contrast,
)
from seqae.training.module import SequenceAutoencoder
from tests.conftest import recurrent

HIERARCHICAL = {"_target_": "seqae.models.objectives.hierarchical.HierarchicalContrast"}
DILATED = {"_target_": "seqae.models.convolutional.DilatedConvEncoder", "depth": 2, "code_size": 6}


def test_the_crops_shared_steps_are_the_same_steps_of_each_series():
    torch.manual_seed(0)
    x = (torch.arange(4 * 50, dtype=torch.float32) + 1).view(4, 50, 1)  # no zeros: zero is padding
    for _ in range(30):
        first, second, shared = overlapping_crops(x)
        tail, head = first[:, -shared:], second[:, :shared]
        inside = (tail != 0) & (head != 0)  # a shift can move part of a crop past the series' ends
        assert torch.equal(tail[inside], head[inside]) and inside.any()
        for crop in (first, second):  # each row a contiguous run of its own series, zeros outside
            values = crop[crop != 0].view(-1)
            rows = ((values - 1) // 50).long()
            assert (torch.diff(values)[torch.diff(rows) == 0] == 1).all()


def test_the_loss_is_lower_for_outputs_that_agree_across_crops_and_differ_between_series_and_steps():
    distinct = 5 * torch.eye(64).view(4, 16, 64)  # each series' each step its own direction, at every scale
    torch.manual_seed(0)
    shuffled = distinct[:, torch.randperm(16)]  # the crops disagree on which step is which
    same = torch.ones(4, 16, 64)  # one output for everything: nothing told apart
    assert hierarchical_loss(distinct, distinct) < 0.1
    assert hierarchical_loss(distinct, shuffled) > 1 and hierarchical_loss(same, same) > 1


def test_each_contrast_is_the_cross_entropy_of_the_other_crop_among_the_other_entries():
    torch.manual_seed(0)
    a, b = torch.randn(3, 5, 4), torch.randn(3, 5, 4)

    def by_hand(groups: torch.Tensor) -> torch.Tensor:  # [G, 2N, C]: rows 0..N-1 one crop, N..2N-1 the other
        n, losses = groups.shape[1] // 2, []
        for z in groups:
            for i in range(2 * n):
                others = [j for j in range(2 * n) if j != i]
                logits = torch.stack([z[i] @ z[j] for j in others])
                losses.append(-torch.log_softmax(logits, 0)[others.index((i + n) % (2 * n))])
        return torch.stack(losses).mean()

    assert torch.allclose(instance_contrast(a, b), by_hand(torch.cat([a, b]).transpose(0, 1)))
    assert torch.allclose(temporal_contrast(a, b), by_hand(torch.cat([a, b], dim=1)))


def test_a_recurrent_encoder_is_refused_at_construction():
    with pytest.raises(ConfigError, match=r"has no steps.*encoder=dilated"):
        SequenceAutoencoder(1, **recurrent(4), objective=HIERARCHICAL)


def test_bad_settings_are_refused_naming_the_keys():
    with pytest.raises(ConfigError, match=r"objective\.max_length"):
        HierarchicalContrast(6, max_length=1)


def test_training_moves_the_encoder_through_both_terms_on_series_longer_than_the_window():
    model = SequenceAutoencoder(
        1,
        encoder=DILATED,
        decoder={"_target_": "seqae.models.decoders.RepeatDecoder", "hidden_size": 4},
        objective={**HIERARCHICAL, "max_length": 16},
        instance_norm=True,
        sequence_length=40,
        max_recurrent_steps=8,
    )
    torch.manual_seed(0)
    loss, recon = model.training_loss({"x": torch.randn(5, 40, 1)})
    loss.backward()
    assert torch.isfinite(loss) and recon.shape == (5, 40, 1)
    assert model.encoder.lift.weight.grad.abs().sum() > 0

"""DTCR's fakes: a share of each series' valid steps shuffled among themselves, nothing else touched."""

from __future__ import annotations

import torch

from seqae.models.objectives.fake_samples import shuffle_steps


def test_fakes_shuffle_a_share_of_each_series_valid_steps_and_keep_its_values():
    torch.manual_seed(0)
    x = torch.arange(2 * 50, dtype=torch.float32).view(2, 50, 1)
    lengths = torch.tensor([50, 30])
    fake = shuffle_steps(x, lengths, 0.2)
    for i, n in enumerate(lengths.tolist()):
        assert sorted(fake[i, :n, 0].tolist()) == x[i, :n, 0].tolist()  # the same values, reordered
        moved = (fake[i, :n] != x[i, :n]).sum().item()
        assert 2 <= moved <= int(0.2 * n)  # only the chosen steps move (a few may land in place)
    assert torch.equal(fake[1, 30:], x[1, 30:])  # padding is not a step
    assert torch.equal(shuffle_steps(x[:, :1], None, 0.2), x[:, :1])  # a single step has nothing to swap

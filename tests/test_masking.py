"""The MaskGIT cosine schedule, the decoding counts and the training masks of both level policies."""

from __future__ import annotations

import math

import pytest
import torch

from v2a.masking import cosine_schedule, masked_counts, training_mask


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def codes(b: int, k: int, l: int) -> torch.Tensor:
    return torch.randint(0, 16, (b, k, l), generator=seeded(99))


# -- schedule -----------------------------------------------------------------------------------


def test_cosine_schedule_values():
    u = torch.linspace(0, 1, 11)
    r = cosine_schedule(u)
    assert float(r[0]) == pytest.approx(1.0)
    assert float(r[-1]) == pytest.approx(0.0, abs=1e-12)
    assert float(cosine_schedule(0.5)) == pytest.approx(math.cos(math.pi / 4))
    assert bool((r[1:] < r[:-1]).all())  # strictly decreasing


@pytest.mark.parametrize("steps", [1, 2, 5, 16])
def test_masked_counts_follow_the_cosine_and_decode_every_step(steps):
    total = torch.tensor([0, 1, 3, 20, 345])
    counts = masked_counts(total, steps)
    assert counts.shape == (steps, 5)
    assert bool((counts[-1] == 0).all())
    previous = total
    for s in range(steps):  # at least one position decoded per step while any is left
        assert bool(((counts[s] < previous) | (previous == 0)).all())
        assert bool((counts[s] >= 0).all())
        previous = counts[s]
    if steps > 1:  # for a long sequence, exactly floor(total · cos(π/2 · (s + 1) / steps))
        expected = [math.floor(345 * math.cos(math.pi / 2 * (s + 1) / steps)) for s in range(steps)]
        assert counts[:, -1].tolist() == expected


# -- training masks -----------------------------------------------------------------------------


def test_per_level_structure():
    b, k, l = 400, 4, 30
    m = training_mask(codes(b, k, l), "per_level", seeded(1))
    assert m.input.shape == m.loss.shape == (b, k, l) and m.input.dtype == torch.bool
    for i in range(b):
        q = int(m.level[i])
        assert not m.input[i, :q].any()  # coarser levels visible
        assert m.input[i, q + 1:].all()  # finer levels hidden
        hidden = int(m.input[i, q].sum())
        assert hidden == max(1, math.floor(float(m.ratio[i]) * l))  # the cosine share
        assert torch.equal(m.loss[i, q], m.input[i, q])  # the loss is on level q's hidden frames
        assert not m.loss[i, :q].any() and not m.loss[i, q + 1:].any()
    assert set(m.level.tolist()) == set(range(k))  # every level gets picked


def test_joint_masks_whole_frames():
    b, k, l = 200, 4, 30
    m = training_mask(codes(b, k, l), "joint", seeded(2))
    assert bool((m.level == -1).all())
    assert torch.equal(m.loss, m.input)
    assert bool((m.input == m.input[:, :1]).all())  # all levels of a frame together
    hidden = m.input[:, 0].sum(dim=1)
    expected = (m.ratio.double() * l).floor().long().clamp(min=1)
    assert torch.equal(hidden, expected)


@pytest.mark.parametrize("policy", ["per_level", "joint"])
def test_at_least_one_position_is_hidden(policy):
    m = training_mask(codes(2000, 3, 2), policy, seeded(3))  # short: floor(r · 2) is often 0
    assert bool((m.loss.flatten(1).sum(dim=1) >= 1).all())
    assert bool((m.ratio < 0.5).any())  # the case the rule exists for was drawn


@pytest.mark.parametrize("policy", ["per_level", "joint"])
def test_mask_ratio_is_cosine_distributed(policy):
    # u ~ U(0, 1) → E[cos(π/2 · u)] = 2/π, and P(r < 1/2) = P(u > 2/3) = 1/3
    m = training_mask(codes(4000, 2, 200), policy, seeded(4))
    level = m.level.clamp(min=0)
    share = m.input[torch.arange(4000), level].float().mean(dim=1)
    assert float(share.mean()) == pytest.approx(2 / math.pi, abs=0.02)
    assert float((m.ratio < 0.5).float().mean()) == pytest.approx(1 / 3, abs=0.03)


@pytest.mark.parametrize("policy", ["per_level", "joint"])
def test_masks_are_reproducible_from_the_generator(policy):
    c = codes(8, 3, 40)
    a, b = training_mask(c, policy, seeded(5)), training_mask(c, policy, seeded(5))
    other = training_mask(c, policy, seeded(6))
    assert torch.equal(a.input, b.input) and torch.equal(a.loss, b.loss)
    assert not torch.equal(a.input, other.input)


@pytest.mark.parametrize("policy", ["per_level", "joint"])
def test_padding_is_never_hidden(policy):
    b, k, l = 64, 3, 20
    valid = torch.arange(l) < torch.randint(1, l + 1, (b, 1), generator=seeded(7))  # [b, l]
    m = training_mask(codes(b, k, l), policy, seeded(8), valid=valid)
    assert not (m.input & ~valid[:, None]).any()
    assert not (m.loss & ~valid[:, None]).any()
    assert bool((m.loss.flatten(1).sum(dim=1) >= 1).all())


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="per_level"):
        training_mask(codes(1, 2, 3), "interleaved")

"""FeatureSequence and Conditioning: rates, times, padding, resampling, batching."""

from __future__ import annotations

import pytest
import torch

from v2a.sequences import Conditioning, FeatureSequence, first_frame_time, pad_sequences


def ramp(length: int, rate: float, start: float = 0.0, batch: int = 1) -> FeatureSequence:
    """Values equal to each step's time in seconds: easy to check after resampling."""
    times = start + torch.arange(length, dtype=torch.float64) / rate
    values = times.float().view(1, length, 1).repeat(batch, 1, 1)
    return FeatureSequence(values=values, rate=rate, start=start)


def test_validation():
    with pytest.raises(ValueError, match=r"\[b, t, d\]"):
        FeatureSequence(values=torch.zeros(2, 3), rate=1.0)
    with pytest.raises(ValueError, match="positive"):
        FeatureSequence(values=torch.zeros(1, 2, 3), rate=0.0)
    with pytest.raises(ValueError, match="mask"):
        FeatureSequence(values=torch.zeros(1, 2, 3), rate=1.0, mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="aligned sequence, a context"):
        Conditioning()


def test_times_and_sizes():
    seq = ramp(8, 4.0, start=0.5, batch=2)
    assert (seq.batch_size, seq.length, seq.dim, seq.duration) == (2, 8, 1, 2.0)
    assert torch.allclose(seq.times(), 0.5 + torch.arange(8, dtype=torch.float64) / 4)
    assert seq.valid_mask().all()


def test_resample_interpolates_linearly_in_time():
    seq = ramp(9, 8.0)  # times 0 .. 1 s
    out = seq.resample(rate=20.0, length=21, start=0.0)
    assert out.rate == 20.0 and out.length == 21 and out.mask is None
    assert torch.allclose(out.values[0, :, 0], torch.arange(21) / 20.0, atol=1e-6)
    # outside the source the nearest end value is held
    past = seq.resample(rate=10.0, length=15, start=0.0)
    assert torch.allclose(past.values[0, 10:, 0], torch.ones(5))


def test_resample_respects_start_times():
    seq = ramp(10, 5.0, start=1.0)  # times 1.0 .. 2.8 s
    out = seq.resample(rate=10.0, length=10, start=1.5)
    assert torch.allclose(out.values[0, :, 0], 1.5 + torch.arange(10) / 10.0, atol=1e-6)


def test_resample_never_reads_padding():
    a, b = ramp(4, 2.0), ramp(8, 2.0)
    padded = pad_sequences([a, b])
    padded.values[0, 4:] = 1e6  # garbage where row 0 is padded
    out = padded.resample(rate=4.0, length=16)
    assert out.mask[0].tolist() == [True] * 8 + [False] * 8  # row 0 lasts 2 s
    assert out.mask[1].all()
    assert out.values[0].max() < 2.0  # garbage never interpolated in
    assert torch.allclose(out.values[1, :15, 0], torch.arange(15) / 4.0)  # then 3.5 s is held


def test_resample_of_a_row_with_no_valid_step_is_all_padding():
    seq = FeatureSequence(values=torch.ones(1, 4, 2), rate=2.0, mask=torch.zeros(1, 4, dtype=torch.bool))
    out = seq.resample(rate=4.0, length=6, start=-1.0)
    assert not out.mask.any()


def test_batch_plumbing():
    seq = pad_sequences([ramp(3, 2.0), ramp(5, 2.0)])
    assert seq.values.shape == (2, 5, 1) and seq.mask.sum(dim=1).tolist() == [3, 5]
    rep = seq.repeat_interleave(3)
    assert rep.batch_size == 6 and torch.equal(rep.values[3], seq.values[1])
    assert torch.equal(rep.mask[:3], seq.mask[:1].expand(3, -1))
    picked = seq.index_select(torch.tensor([1, 1, 0]))
    assert torch.equal(picked.values[2], seq.values[0])
    both = FeatureSequence.cat([seq, seq])
    assert both.batch_size == 4 and both.mask.shape == (4, 5)
    with pytest.raises(ValueError, match="equal rate"):
        FeatureSequence.cat([seq, ramp(5, 3.0)])
    with pytest.raises(ValueError, match="one rate"):
        pad_sequences([ramp(3, 2.0), ramp(3, 4.0)])
    moved = seq.to(torch.float64)
    assert moved.values.dtype == torch.float64 and moved.mask.dtype == torch.bool


def test_conditioning_operations_keep_rows_aligned():
    aligned = ramp(6, 3.0, batch=2)
    aligned.values[1] += 10
    context = pad_sequences([ramp(2, 1.0), ramp(4, 1.0)])
    cond = Conditioning(aligned=aligned, context=context)
    assert cond.batch_size == 2
    rep = cond.repeat_interleave(2)
    assert rep.batch_size == 4
    assert torch.equal(rep.aligned.values[2], aligned.values[1])
    assert torch.equal(rep.context.mask[2], context.mask[1])
    only_context = Conditioning(context=context).index_select(torch.tensor([1]))
    assert only_context.aligned is None and only_context.batch_size == 1


def test_first_frame_time():
    assert first_frame_time(torch.tensor([0.25, 0.5, 0.75]), 3) == 0.25
    assert first_frame_time(torch.tensor([[1.0, 2.0], [1.0, 2.0]]), 2) == 1.0
    with pytest.raises(ValueError, match="entries for 3 frames"):
        first_frame_time(torch.tensor([0.0, 1.0]), 3)
    with pytest.raises(ValueError, match="start at different times"):
        first_frame_time(torch.tensor([[0.0, 1.0], [0.5, 1.5]]), 2)

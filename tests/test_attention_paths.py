"""The MaskVAT generator's two attention paths (``attention: sdpa | explicit | auto``).

``explicit_attention`` writes ``softmax(q kᵀ / √d) v`` out; ``scaled_dot_product_attention``
fuses it. They must compute the same product (exactly in float64, within rounding in bfloat16),
masks included, so that ``auto`` may pick either from a timing without changing results beyond
rounding. No test here times anything: ``auto``'s timing is replaced where it is exercised.
"""

from __future__ import annotations

import re

import pytest
import torch
import v2a_plugins.generators.maskvat_model as maskvat_model  # the state the paths read
from v2a_plugins.generators.maskvat import (
    MaskVATConfig,
    MaskVATGenerator,
    choose_attention,
    explicit_attention,
    sdpa_attention,
)

from tests.plugins.test_maskvat_generator import SMALL, codes_and_mask, condition, wake
from tests.test_sampler import load_benchmark
from v2a.errors import UserError
from v2a.registry import default_registry
from v2a.sampler import half_copy, sample

#: bfloat16 keeps 8 significant bits: one rounding to nearest is off by at most u = 2^-8
#: of the value rounded.
BF16_U = 2.0**-8
#: float64 keeps 53: u = 2^-53.
FP64_U = 2.0**-53


def inputs(b=2, h=3, l=10, s=7, d=8, *, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=gen, dtype=torch.float64) for n in (l, s, s))
    # keys 0..valid-1 of each row attended: row 1 sees only its first key (the generator's null
    # token is always valid, so a row with no valid key never reaches attention)
    valid = torch.tensor([s, 1] + [s - 2] * (b - 2))[:b]
    mask = (torch.arange(s)[None] < valid[:, None])[:, None, None, :]  # [b, 1, 1, s]
    return (q.to(dtype), k.to(dtype), v.to(dtype)), mask


@pytest.mark.parametrize("masked", [False, True])
def test_explicit_equals_sdpa_in_float64(masked, monkeypatch):
    """Same product: in float64 the two differ by rounding only. Each output element is a
    convex combination of s = 7 values; the scores are sums of d = 8 products; the softmax
    adds an exp and a sum of s terms: the error of each path is a few tens of u·max|v|, far
    below the 1e-12 asserted (2^-53 ≈ 1.1e-16). Queries are split into pieces of 3 rows
    (``SCORE_ELEMENTS``) to check the chunking too."""
    (q, k, v), mask = inputs()
    mask = mask if masked else None
    monkeypatch.setattr(maskvat_model, "SCORE_ELEMENTS", 3 * 2 * 3 * 7)  # 3 query rows a piece
    explicit = explicit_attention(q, k, v, mask)
    torch.testing.assert_close(explicit, sdpa_attention(q, k, v, mask), rtol=0, atol=1e-12)
    if masked:  # the masked keys are not read at all
        k2, v2 = k.clone(), v.clone()
        k2[1, :, 1:], v2[1, :, 1:] = 1e3, -1e3
        torch.testing.assert_close(explicit_attention(q, k2, v2, mask), explicit, rtol=0, atol=0)


def bf16_attention_bound(q, k, v) -> float:
    """What rounding to bfloat16 may cost one path, from the inputs (already bf16-exact).

    The written-out path rounds the scores ``s = q·k/√d`` (error ≤ u·|s|: the fp32 sum of d
    products is exact to 2^-24, negligible), which moves each probability by at most
    ``2·u·max|s|`` of itself (softmax's derivative: p_j·(δs_j - Σ p δs)); then it rounds the
    probabilities (u of each) and the output (u of it). SDPA rounds only the output. The
    output is a convex combination of v, so each of these relative errors is at most that
    fraction of max|v|: per path ≤ (2·max|s| + 2)·u·max|v|."""
    scores = (q.double() @ k.double().transpose(-2, -1)) / q.shape[-1] ** 0.5
    return (2 * float(scores.abs().max()) + 2) * BF16_U * float(v.double().abs().max())


@pytest.mark.parametrize("masked", [False, True])
def test_both_paths_within_bf16_rounding_of_the_exact_product(masked):
    (q, k, v), mask = inputs(dtype=torch.bfloat16)
    mask = mask if masked else None
    exact = sdpa_attention(q.double(), k.double(), v.double(), mask)
    bound = bf16_attention_bound(q, k, v)
    for path in (explicit_attention, sdpa_attention):
        error = float((path(q, k, v, mask).double() - exact).abs().max())
        assert error <= bound, (path.__name__, error, bound)


def hybrid(dtype=torch.float32, **changes) -> MaskVATGenerator:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        generator = wake(MaskVATGenerator(MaskVATConfig(**{**SMALL, **changes}), variant="hybrid"))
    generator = generator.eval()
    return generator if dtype == torch.float32 else half_copy(generator, dtype)


def logits_with(generator, setting, cond, codes, mask):
    generator.config.attention = setting
    with torch.inference_mode():
        return generator.predict(codes, mask, generator.prepare(cond)).double()


def test_logits_of_both_paths_agree_within_bf16_tolerance():
    """The whole bf16 model, cross-attention key masks included (row 0: 7 of 7 context steps
    valid, row 1: none, so it attends to the null token alone).

    Tolerance: the two paths differ only inside the 4 attentions of a forward (2 blocks, self
    and cross), each by at most (2·max|s| + 3)·u of its output scale (the bound of
    ``bf16_attention_bound``, plus one output rounding for the other path). With these weights
    the scores stay below 4 in magnitude, so that is at most 11·u per attention, 44·u for the
    4 of them, if nothing downstream amplifies: every block renormalises its input (LayerNorm)
    and the 2-block model adds its branches to a residual stream of the same scale; the
    logits carry it at their own scale, max|logits|. The final rounding of the logits adds u
    per path: 46·u · max|logits| in all. A missing key mask or scale changes them by far more
    (checked below)."""
    generator = hybrid(torch.bfloat16)
    cond = condition(generator, context_valid=(7, 0)).to(dtype=torch.bfloat16)
    codes, mask = codes_and_mask()
    sdpa = logits_with(generator, "sdpa", cond, codes, mask)
    explicit = logits_with(generator, "explicit", cond, codes, mask)
    tolerance = 46 * BF16_U * float(sdpa.abs().max())
    assert float((explicit - sdpa).abs().max()) <= tolerance
    assert bool(explicit.isfinite().all())
    # the tolerance tells a real difference apart: the context unmasked changes row 1
    unmasked = condition(generator, context_valid=(7, 7)).to(dtype=torch.bfloat16)
    wrong = logits_with(generator, "explicit", unmasked, codes, mask)
    assert float((wrong - sdpa).abs().max()) > tolerance


def test_fp32_explicit_sampler_keeps_the_reference_loops_tokens():
    """In fp32 the sampler with written-out attention returns the reference loop's tokens (the
    loop runs the same generator, so the same path, one row at a time)."""
    bench = load_benchmark()
    work = bench.QUICK
    generator, fuser, streams = bench.build(work)
    generator.config.attention = "explicit"
    with torch.no_grad():
        cond = fuser.fuse(streams, frame_rate=work.frame_rate, num_frames=work.num_frames)
    options = dict(num_frames=work.num_frames, steps=list(work.steps), cfg_scale=work.cfg_scale,
                   candidates=work.candidates, seed=0)
    fast = sample(generator, cond, **options)
    assert torch.equal(fast, bench.reference_sample(generator, cond, **options))
    generator.config.attention = "sdpa"
    assert torch.equal(fast, sample(generator, cond, **options))


def test_training_with_dropout_goes_through_sdpa():
    """Training draws attention dropout, which only the SDPA path has: ``explicit`` (and
    ``auto``) resolve to SDPA there, and with the same seed give the same loss as ``sdpa``."""
    generator = hybrid(dropout=0.3, attention="explicit").train()
    cond = condition(generator)
    codes, mask = codes_and_mask()
    assert generator.attention_paths(2, 12, 8, None, torch.float32) == ("sdpa", "sdpa")

    def forward(setting):
        generator.config.attention = setting
        torch.manual_seed(3)
        return generator(codes, mask, cond)

    torch.testing.assert_close(forward("explicit"), forward("sdpa"), rtol=0, atol=0)
    generator.config.attention = "explicit"
    assert generator.eval().attention_paths(2, 12, 8, None, torch.float32) == ("explicit", "explicit")


def test_auto_times_once_per_bucket_on_a_cpu_and_uses_sdpa_elsewhere(monkeypatch):
    timings = []

    def fake_timing(q, keys, *, dtype, masked):
        timings.append((q, keys))
        return {7: (1.0, 0.5), 9: (1.0, 0.95)}[keys]  # seconds: sdpa, explicit

    monkeypatch.setattr(maskvat_model, "time_attention", fake_timing)
    monkeypatch.setattr(maskvat_model, "_MEASURED", {})
    cpu, q = torch.device("cpu"), (2, 4, 12, 8)
    choose = lambda keys, **kw: choose_attention("auto", q, keys, dtype=torch.bfloat16,  # noqa: E731
                                                 masked=False, **kw)
    assert choose(7, device=cpu) == "explicit"  # clearly faster
    assert choose(9, device=cpu) == "sdpa"  # within 10 %: not worth a noisy choice
    assert choose(7, device=cpu) == "explicit" and len(timings) == 2  # measured once
    assert choose(7, device=torch.device("cuda")) == "sdpa" and len(timings) == 2
    assert choose_attention("explicit", q, 7, dtype=torch.float32, device=torch.device("cuda"),
                            masked=True) == "explicit"
    assert maskvat_model.attention_choices() == {"bfloat16 h4 l12 s7 d8": "explicit",
                                           "bfloat16 h4 l12 s9 d8": "sdpa"}


def test_timing_leaves_torchs_random_stream_alone():
    state = torch.random.get_rng_state()
    sdpa, explicit = maskvat_model.time_attention((1, 2, 6, 4), 5, dtype=torch.float32,
                                                  masked=True, rounds=1)
    assert sdpa > 0 and explicit > 0
    assert torch.equal(torch.random.get_rng_state(), state)


def test_unknown_attention_setting_is_refused():
    with pytest.raises(ValueError, match="attention must be one of auto, sdpa, explicit"):
        MaskVATConfig(attention="fast")
    with pytest.raises(UserError, match=re.escape("option attention: expected auto | sdpa | explicit")):
        default_registry().build_from("generator", {"plugin": "maskvat_hybrid", **SMALL,
                                                    "attention": "fast"})


def test_under_autocast_the_bucket_is_autocasts_dtype(monkeypatch):
    """Under ``torch.autocast`` the products run in its dtype: that is the bucket measured."""
    monkeypatch.setattr(maskvat_model, "time_attention",
                        lambda q, keys, *, dtype, masked: (1.0, 2.0))
    monkeypatch.setattr(maskvat_model, "_MEASURED", {})
    generator = hybrid()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert generator.attention_paths(2, 12, None, None, torch.float32) == ("sdpa", "sdpa")
    assert maskvat_model.attention_choices() == {"bfloat16 h4 l12 s12 d8": "sdpa"}

"""The iterative sampler (v2a.sampler) with the three MaskVAT generators at small sizes.

The sampler only knows the MaskedGenerator interface; the MaskVAT generators (random init,
width 32, 2 layers, 2 heads, k = 3, vocabulary 16) are the real models it will drive.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from v2a import Conditioning, FeatureSequence, MaskedGenerator
from v2a.masking import masked_counts
from v2a.registry import default_registry
from v2a.sampler import (
    PreparedCondition,
    Prompt,
    decode_step,
    pick_tokens,
    prepare_condition,
    sample,
)

VARIANTS = ["adaln", "seq2seq", "hybrid"]
K, VOCAB, DIM, L = 3, 16, 8, 20
ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str = "bench_generate"):
    """``benchmarks/<name>.py`` as a module, loaded once (bench_generate holds the plain
    reference loop)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def small_generator(variant: str, seed: int = 0) -> MaskedGenerator:
    """A small MaskVAT generator whose conditioning matters from the start (the zero-initialised
    AdaLN and cross-attention output layers get small random weights)."""
    torch.manual_seed(seed)
    generator = default_registry().build_from("generator", {
        "plugin": f"maskvat_{variant}", "width": 32, "layers": 2, "heads": 2,
        "n_codebooks": K, "codebook_size": VOCAB, "condition_dim": DIM,
    }).eval()
    with torch.no_grad():
        for p in generator.parameters():
            if p.dim() == 2 and float(p.abs().max()) == 0.0:
                p.normal_(0.0, 0.3)
    return generator


def condition_for(generator: MaskedGenerator, b: int = 2, seed: int = 1) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    aligned = context = None
    if generator.uses_aligned:
        aligned = FeatureSequence(torch.randn(b, L, DIM, generator=g), rate=86.13)
    if generator.uses_context:
        values = torch.randn(b, 6, DIM, generator=g)
        mask = torch.arange(6) < torch.tensor([[6], [4]]).repeat(b // 2 + 1, 1)[:b]
        context = FeatureSequence(values, rate=8.0, mask=mask)
    return Conditioning(aligned=aligned, context=context)


def half_prompt(b: int = 2, seed: int = 2) -> Prompt:
    """Known codes: the first 8 frames of every level and every 5th frame of level 1."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, VOCAB, (b, K, L), generator=g)
    known = torch.zeros(b, K, L, dtype=torch.bool)
    known[:, :, :8] = True
    known[:, 1, ::5] = True
    return Prompt(codes=codes, known=known)


EVERY_OPTION = dict(steps=[4, 2, 1], temperature=1.5, anneal_temperature=True, top_k=8, top_p=0.9,
                    cfg_scale=2.5, candidates=3)


class AlwaysDrop(MaskedGenerator):
    """``inner`` with its conditioning always dropped: the unconditional model."""

    def __init__(self, inner: MaskedGenerator):
        super().__init__()
        self.inner = inner
        for name in ("n_codebooks", "codebook_size", "condition_dim", "uses_aligned",
                     "uses_context", "hidden_dim"):
            setattr(self, name, getattr(inner, name))

    def prepare(self, condition, *, drop=None):
        return self.inner.prepare(condition, drop=torch.ones(condition.batch_size, dtype=torch.bool))

    def predict(self, codes, mask, prepared, *, return_hidden=False, level=None):
        return self.inner.predict(codes, mask, prepared, return_hidden=return_hidden, level=level)


def assert_valid(codes: torch.Tensor, rows: int, prompt: Prompt | None = None, candidates: int = 1):
    assert codes.dtype == torch.int64
    assert codes.shape == (rows, K, L)
    assert int(codes.min()) >= 0 and int(codes.max()) < VOCAB
    if prompt is not None:
        known = prompt.known.repeat_interleave(candidates, dim=0)
        kept = prompt.codes.repeat_interleave(candidates, dim=0)
        assert torch.equal(codes[known], kept[known])


# -- validity and reproducibility ---------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_option_gives_valid_codes(variant, precision):
    generator = small_generator(variant)
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    generator.train()
    prompt = half_prompt()
    out = sample(generator, condition_for(generator), num_frames=L, seed=3, precision=precision,
                 prompt=prompt, **EVERY_OPTION)
    assert_valid(out, 2 * 3, prompt, candidates=3)
    # the generator is left as it was: weights, dtype, training flag
    assert generator.training
    for k, v in generator.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k])


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_seed_reproduces_bit_for_bit(variant):
    generator, options = small_generator(variant), dict(num_frames=L, **EVERY_OPTION)
    condition = condition_for(generator)
    a = sample(generator, condition, seed=7, **options)
    b = sample(generator, condition, seed=7, **options)
    c = sample(generator, condition, seed=8, **options)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # the candidates of a video differ


def test_bf16_reproduces_and_stays_close_to_fp32():
    generator = small_generator("hybrid")
    condition = condition_for(generator)
    options = dict(num_frames=L, steps=[4, 1], temperature=0.0, remask_noise=0.0, cfg_scale=2.0)
    a = sample(generator, condition, precision="bf16", **options)
    assert torch.equal(a, sample(generator, condition, precision="bf16", **options))
    fp32 = sample(generator, condition, precision="fp32", **options)
    assert float((a == fp32).float().mean()) > 0.7  # greedy: bf16 rounding flips few tokens


# -- the cached, batched path against the plain loop ---------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("prompted", [False, True])
def test_cached_batched_path_equals_the_reference_loop(variant, prompted):
    generator = small_generator(variant)
    condition = condition_for(generator)
    prompt = half_prompt() if prompted else None
    options = dict(num_frames=L, seed=11, prompt=prompt, **EVERY_OPTION)
    fast = sample(generator, condition, **options)
    plain = load_benchmark().reference_sample(generator, condition, **options)
    assert torch.equal(fast, plain)


@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_single_pass_guidance_equals_the_reference_loop(cfg_scale):
    generator = small_generator("hybrid")
    condition = condition_for(generator)
    options = {**EVERY_OPTION, "cfg_scale": cfg_scale}
    fast = sample(generator, condition, num_frames=L, seed=12, **options)
    plain = load_benchmark().reference_sample(generator, condition, num_frames=L, seed=12, **options)
    assert torch.equal(fast, plain)


def test_a_video_gives_the_same_candidates_alone_and_in_a_batch():
    generator = small_generator("hybrid")
    condition = condition_for(generator, b=2)
    both = sample(generator, condition, num_frames=L, seed=5, **EVERY_OPTION)
    second = sample(generator, condition.index_select(torch.tensor([1])), num_frames=L, seed=5,
                    **EVERY_OPTION)
    assert torch.equal(both[3:], second)


# -- classifier-free guidance ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_cfg_scale_0_is_the_unconditional_model(variant):
    generator = small_generator(variant)
    condition, other = condition_for(generator, seed=1), condition_for(generator, seed=9)
    options = {**EVERY_OPTION, "cfg_scale": 0.0}
    unguided = sample(generator, condition, num_frames=L, seed=4, **options)
    dropped = sample(AlwaysDrop(generator), condition, num_frames=L, seed=4,
                     **{**options, "cfg_scale": 1.0})
    assert torch.equal(unguided, dropped)
    # and it does not depend on the conditioning, unlike the conditional model
    assert torch.equal(unguided, sample(generator, other, num_frames=L, seed=4, **options))
    conditional = {**options, "cfg_scale": 1.0}
    assert not torch.equal(sample(generator, condition, num_frames=L, seed=4, **conditional),
                           sample(generator, other, num_frames=L, seed=4, **conditional))


def test_guidance_formula_on_one_step():
    cond = torch.tensor([[[0.0, 2.0, 1.0]]])  # [n=1, l=1, vocab=3]
    uncond = torch.tensor([[[0.0, 2.5, 0.0]]])
    hidden = torch.ones(1, 1, dtype=torch.bool)
    uniform = torch.rand(1, 1, 3), torch.rand(1, 1)
    picks = {}
    for scale in (0.0, 1.0, 3.0):  # uncond + s (cond - uncond) = [0, 2.5 - 0.5 s, s]
        tokens, _ = decode_step(cond if scale else None, uncond if scale != 1 else None, hidden,
                                torch.zeros(1, dtype=torch.long), *uniform, cfg_scale=scale,
                                temperature=0.0, top_k=None, top_p=None, noise_scale=0.0)
        picks[scale] = int(tokens[0, 0])
    assert picks == {0.0: 1, 1.0: 1, 3.0: 2}


def test_prepare_runs_once_and_each_step_is_one_batched_forward(monkeypatch):
    generator = small_generator("hybrid")
    condition = condition_for(generator, b=2)
    prepares, predicts, levels = [], [], []
    real_prepare, real_predict = generator.prepare, generator.predict

    def spy_prepare(condition, *, drop=None):
        prepares.append(drop.clone())
        return real_prepare(condition, drop=drop)

    def spy_predict(codes, mask, prepared, *, return_hidden=False, level=None):
        assert not torch.is_grad_enabled() and torch.is_inference_mode_enabled()
        predicts.append(mask.clone())
        levels.append(level)
        return real_predict(codes, mask, prepared, return_hidden=return_hidden, level=level)

    monkeypatch.setattr(generator, "prepare", spy_prepare)
    monkeypatch.setattr(generator, "predict", spy_predict)
    steps = [4, 2, 1]
    sample(generator, condition, num_frames=L, steps=steps, cfg_scale=3.0, candidates=3, seed=0)
    # prepare: one call, the 2 videos conditional then unconditional
    assert len(prepares) == 1 and prepares[0].tolist() == [False, False, True, True]
    # predict: one call per step, 2 passes x 2 videos x 3 candidates rows each
    assert len(predicts) == sum(steps) + (K - len(steps)) * steps[-1]
    assert all(m.shape == (12, K, L) for m in predicts)
    # each step asks only for the logits of the level it decodes
    per_level = [steps[min(q, len(steps) - 1)] for q in range(K)]
    assert levels == [q for q in range(K) for _ in range(per_level[q])]
    # levels coarse to fine; on level 0 the hidden count follows the cosine schedule
    level0 = [int(m[0, 0].sum()) for m in predicts[:4]]
    assert level0 == [L] + masked_counts(torch.tensor([L]), 4)[:3, 0].tolist()
    level1 = predicts[4:6]
    assert all(not m[:, 0].any() and m[:, 2].all() for m in level1)

    # cfg_scale 1: the conditional pass only, no dropped rows prepared
    prepares.clear(), predicts.clear()
    sample(generator, condition, num_frames=L, steps=steps, cfg_scale=1.0, candidates=3, seed=0)
    assert prepares[0].tolist() == [False, False]
    assert all(m.shape[0] == 6 for m in predicts)


def test_a_prepared_condition_can_be_reused():
    generator = small_generator("hybrid")
    condition = condition_for(generator)
    prepared = prepare_condition(generator, condition, cfg_scale=2.5)
    assert isinstance(prepared, PreparedCondition) and prepared.parts == ("cond", "uncond")
    direct = sample(generator, condition, num_frames=L, seed=1, **EVERY_OPTION)
    reused = sample(generator, prepared, num_frames=L, seed=1, **EVERY_OPTION)
    assert torch.equal(direct, reused)
    with pytest.raises(ValueError, match="cfg_scale"):
        sample(generator, prepared, num_frames=L, cfg_scale=1.0)


# -- sampling options -----------------------------------------------------------------------------


def test_greedy_decoding_ignores_the_seed_and_top_k_1_is_greedy():
    generator = small_generator("hybrid")
    condition = condition_for(generator)
    greedy = dict(num_frames=L, steps=[4, 1], remask_noise=0.0)
    a = sample(generator, condition, temperature=0.0, seed=0, **greedy)
    assert torch.equal(a, sample(generator, condition, temperature=0.0, seed=1, **greedy))
    assert torch.equal(a, sample(generator, condition, temperature=2.0, top_k=1, seed=1, **greedy))
    assert torch.equal(a, sample(generator, condition, temperature=2.0, top_p=1e-6, seed=1, **greedy))
    assert not torch.equal(a, sample(generator, condition, temperature=2.0, seed=1, **greedy))


def test_top_k_and_top_p_restrict_the_choice():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    uniform = torch.rand(4000, 4, generator=torch.Generator().manual_seed(0))
    free, logp = pick_tokens(logits, uniform, temperature=1.0)
    assert set(free.tolist()) == {0, 1, 2, 3}
    share = torch.bincount(free, minlength=4).float() / 4000  # Gumbel-max samples the softmax
    assert torch.allclose(share, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03)
    assert torch.allclose(logp, logits.gather(1, free[:, None])[:, 0], atol=1e-6)
    top2, _ = pick_tokens(logits, uniform, temperature=1.0, top_k=2)
    assert set(top2.tolist()) == {0, 1}
    nucleus, _ = pick_tokens(logits, uniform, temperature=1.0, top_p=0.7)  # 0.5 + 0.3 reach 0.7
    assert set(nucleus.tolist()) == {0, 1}
    hot, _ = pick_tokens(logits, uniform, temperature=100.0)
    assert float((hot == 3).float().mean()) > 0.2  # a high temperature flattens the choice


def test_steps_list_repeats_its_last_value(monkeypatch):
    generator = small_generator("adaln")
    calls = []
    real = generator.predict
    monkeypatch.setattr(generator, "predict", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    sample(generator, condition_for(generator), num_frames=L, steps=[5, 2], cfg_scale=1.0)
    assert len(calls) == 5 + 2 + 2
    calls.clear()
    sample(generator, condition_for(generator), num_frames=L, steps=3, cfg_scale=1.0)
    assert len(calls) == 3 * K


def test_fully_known_prompt_is_returned_unchanged():
    generator = small_generator("seq2seq")
    prompt = half_prompt()
    prompt.known[:] = True
    out = sample(generator, condition_for(generator), num_frames=L, candidates=2, prompt=prompt)
    assert torch.equal(out, prompt.codes.repeat_interleave(2, dim=0))


@pytest.mark.parametrize("bad", [dict(precision="int8"), dict(top_k=0), dict(top_p=0.0),
                                 dict(candidates=0), dict(steps=[]), dict(steps=[4, 0])])
def test_bad_options_are_refused(bad):
    generator = small_generator("adaln")
    with pytest.raises(ValueError):
        sample(generator, condition_for(generator), num_frames=L, **bad)


def test_temperature_anneals_to_zero_over_each_level():
    from v2a.sampler import step_temperature

    assert [step_temperature(2.0, s, 4, True) for s in range(4)] == [2.0, 1.5, 1.0, 0.5]
    assert step_temperature(2.0, 3, 4, False) == 2.0
    assert math.isclose(step_temperature(1.0, 0, 1, True), 1.0)  # one step: full temperature


def test_bf16_copy_is_cached_until_the_weights_change():
    from v2a.sampler import half_copy

    generator, other = small_generator("hybrid", seed=0), small_generator("hybrid", seed=5)
    twin = half_copy(generator)
    assert half_copy(generator) is twin
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in twin.parameters())
    condition = condition_for(generator)
    options = dict(num_frames=L, seed=2, precision="bf16", **EVERY_OPTION)
    before = sample(generator, condition, **options)
    generator.load_state_dict(other.state_dict())  # in place: the cached copy is stale
    assert half_copy(generator) is not twin
    assert torch.equal(sample(generator, condition, **options), sample(other, condition, **options))
    assert not torch.equal(before, sample(generator, condition, **options))


def test_a_recipes_sampling_section_gives_the_samplers_options():
    from v2a.recipe import SamplingConfig
    from v2a.sampler import recipe_sampling

    generator = small_generator("hybrid")
    condition = condition_for(generator)
    section = SamplingConfig(steps=[3, 1], temperature=0.7, top_k=5, cfg_scale=1.5, candidates=2,
                             seed=9)
    explicit = sample(generator, condition, num_frames=L, steps=[3, 1], temperature=0.7, top_k=5,
                      cfg_scale=1.5, candidates=2, seed=9)
    assert torch.equal(sample(generator, condition, num_frames=L, **recipe_sampling(section)),
                       explicit)

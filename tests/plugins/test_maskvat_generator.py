"""MaskVAT generators (AdaLN, Seq2Seq, Hybrid): the kit's contracts and the design's properties."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from v2a_plugins.generators.maskvat import VARIANTS, MaskVATConfig, MaskVATGenerator

from v2a.errors import PluginError, UserError
from v2a.registry import default_registry
from v2a.sequences import Conditioning, FeatureSequence
from v2a.testing import from_registry, parametrize_with_checks

SMALL = dict(n_codebooks=3, codebook_size=16, condition_dim=8, width=32, layers=2, heads=4,
             max_frames=64)


def wake(generator: MaskVATGenerator, std: float = 0.3) -> MaskVATGenerator:
    """Fill the zero-initialised conditioning path (AdaLN linears, cross-attention output) with
    random weights, as training would: at initialisation the conditioning has no effect at all,
    which would make the conditioning checks pass whatever the code does."""
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if "adaln" in name or "cross_out" in name:
                param.normal_(0.0, std)
    return generator


def awake(variant: str):
    factory = from_registry("generator", f"maskvat_{variant}", **SMALL)

    def build():
        return wake(factory())

    build.__name__ = f"generator:maskvat_{variant}(awake)"
    return build


@parametrize_with_checks(
    [from_registry("generator", f"maskvat_{v}", **SMALL) for v in VARIANTS]
    + [awake(v) for v in VARIANTS]
)
def test_conformance(factory, check):
    check(factory)


# -- helpers ---------------------------------------------------------------------------------------


def small(variant: str, *, awake: bool = True, seed: int = 0, **changes) -> MaskVATGenerator:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = MaskVATGenerator(MaskVATConfig(**{**SMALL, **changes}), variant=variant)
        if awake:
            wake(generator)
    return generator.eval()


def condition(generator, b=2, l=12, *, seed=0, context_valid=(7, 4)) -> Conditioning:
    gen = torch.Generator().manual_seed(seed)
    d = generator.condition_dim
    aligned = context = None
    if generator.uses_aligned:
        aligned = FeatureSequence(torch.randn(b, l, d, generator=gen), rate=86.13)
    if generator.uses_context:
        s = max(context_valid)
        mask = torch.arange(s)[None] < torch.tensor(context_valid[:b])[:, None]
        context = FeatureSequence(torch.randn(b, s, d, generator=gen), rate=11.125, mask=mask)
    return Conditioning(aligned=aligned, context=context)


def codes_and_mask(b=2, k=3, l=12, vocab=16, seed=0, ratio=0.5):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, vocab, (b, k, l), generator=gen)
    return codes, torch.rand(b, k, l, generator=gen) < ratio


# -- initialisation --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_conditioning_starts_with_no_effect_and_gains_it_when_trained(variant):
    codes, mask = codes_and_mask()
    fresh = small(variant, awake=False)
    a, b = condition(fresh, seed=1), condition(fresh, seed=2)
    with torch.no_grad():
        assert torch.equal(fresh(codes, mask, a), fresh(codes, mask, b))
        # the same weights with the zero-initialised path filled in: now the video matters
        trained = wake(fresh)
        assert not torch.allclose(trained(codes, mask, a), trained(codes, mask, b), atol=1e-4)


@pytest.mark.parametrize("variant", ["adaln", "hybrid"])
def test_adaln_zero_blocks_start_as_the_identity(variant):
    """DiT's AdaLN-Zero: every gate starts at zero, so at initialisation a frame's logits depend
    on that frame's codes only (final norm and heads of the input embedding)."""
    generator = small(variant, awake=False)
    codes, mask = codes_and_mask()
    changed = codes.clone()
    changed[:, :, 5] = (codes[:, :, 5] + 1) % 16
    unmasked = mask.clone()
    unmasked[:, :, 5] = False
    with torch.no_grad():
        before = generator(codes, unmasked, condition(generator))
        after = generator(changed, unmasked, condition(generator))
    others = [i for i in range(12) if i != 5]
    assert torch.equal(before[:, :, others], after[:, :, others])
    assert not torch.allclose(before[:, :, 5], after[:, :, 5])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_zero_initialised_path_gets_gradients_and_a_small_model_overfits(variant):
    """From the zero init, gradient reaches the conditioning path, and a few Adam steps fit a
    fixed batch (cross-entropy on masked positions falls)."""
    generator = small(variant, awake=False).train()
    codes, mask = codes_and_mask(b=4, seed=3)
    cond = condition(generator, b=4, context_valid=(7, 4, 1, 6))
    opt = torch.optim.Adam(generator.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        logits = generator(codes, mask, cond)
        loss = F.cross_entropy(logits[mask], codes[mask])
        opt.zero_grad()
        loss.backward()
        if step == 0:
            zero_path = [p for n, p in generator.named_parameters() if "adaln" in n or "cross_out" in n]
            assert zero_path and all(p.grad is not None for p in zero_path)
            assert any(float(p.grad.abs().max()) > 0 for p in zero_path)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


# -- attention -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bidirectional_logits_depend_on_codes_before_and_after(variant):
    generator = small(variant)
    codes, mask = codes_and_mask()
    mask[:, :, 5] = False
    changed = codes.clone()
    changed[:, :, 5] = (codes[:, :, 5] + 3) % 16
    cond = condition(generator)
    with torch.no_grad():
        diff = (generator(codes, mask, cond) - generator(changed, mask, cond)).abs().amax(dim=(1, 3))
    assert bool((diff[:, :5] > 1e-5).all()) and bool((diff[:, 6:] > 1e-5).all()), diff


def test_position_matters():
    """Rotary positions: the same codes in another order are not just permuted logits."""
    generator = small("adaln")
    codes, mask = codes_and_mask()
    mask[:] = False
    order = torch.roll(torch.arange(12), 3)
    cond = condition(generator)
    cond = Conditioning(aligned=cond.aligned.replace(values=cond.aligned.values[:, :1].expand(-1, 12, -1)))
    with torch.no_grad():
        straight = generator(codes, mask, cond)[:, :, order]
        rolled = generator(codes[:, :, order], mask, cond)
    assert not torch.allclose(straight, rolled, atol=1e-4)


@pytest.mark.parametrize("variant", ["seq2seq", "hybrid"])
def test_cross_attention_ignores_padding(variant):
    """A padded context gives the logits of the same context cut to its valid steps."""
    generator = small(variant)
    codes, mask = codes_and_mask(b=1)
    full = condition(generator, b=2, context_valid=(7, 4))
    row = torch.tensor([1])
    aligned = None if full.aligned is None else full.aligned.index_select(row)
    padded = Conditioning(aligned=aligned, context=full.context.index_select(row))
    ctx = full.context
    cut = Conditioning(aligned=aligned, context=FeatureSequence(ctx.values[1:, :4], rate=ctx.rate))
    with torch.no_grad():
        torch.testing.assert_close(generator(codes, mask, padded), generator(codes, mask, cut))


@pytest.mark.parametrize("variant", ["seq2seq", "hybrid"])
def test_fully_padded_context_is_finite_and_equals_no_video(variant):
    generator = small(variant)
    codes, mask = codes_and_mask()
    cond = condition(generator, context_valid=(0, 0))
    cond.context.values[:] = 1e4  # nothing valid: must not be read either
    with torch.no_grad():
        logits = generator(codes, mask, cond)
        dropped = generator(codes, mask, condition(generator, seed=5), drop=torch.ones(2, dtype=torch.bool))
    assert bool(logits.isfinite().all())
    if variant == "seq2seq":  # nothing else conditions it: an empty context is "no video"
        torch.testing.assert_close(logits, dropped)


# -- conditioning ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_dropped_rows_are_unconditional_and_differ_from_conditional(variant):
    generator = small(variant)
    codes, mask = codes_and_mask()
    drop = torch.tensor([True, False])
    with torch.no_grad():
        mixed = generator(codes, mask, condition(generator, seed=1), drop=drop)
        other = generator(codes, mask, condition(generator, seed=2), drop=drop)
        conditional = generator(codes, mask, condition(generator, seed=1))
    torch.testing.assert_close(mixed[0], other[0])  # row 0 ignores its conditioning
    torch.testing.assert_close(mixed[1], conditional[1])
    assert not torch.allclose(mixed[0], conditional[0], atol=1e-4)


@pytest.mark.parametrize("variant", ["adaln", "hybrid"])
def test_aligned_padding_is_the_null_conditioning(variant):
    """Frames the aligned mask marks as padding (no video there) use the learned null vector,
    whatever the values: a fully padded row equals a dropped row."""
    generator = small(variant)
    codes, mask = codes_and_mask()
    cond = condition(generator)
    no_video = Conditioning(
        aligned=cond.aligned.replace(values=cond.aligned.values * 100,
                                     mask=torch.zeros(2, 12, dtype=torch.bool)),
        context=cond.context,
    )
    with torch.no_grad():
        padded = generator(codes, mask, no_video)
        dropped = generator(codes, mask, cond, drop=torch.ones(2, dtype=torch.bool))
    if variant == "adaln":
        torch.testing.assert_close(padded, dropped)
    else:
        assert not torch.allclose(padded, dropped, atol=1e-4)  # the context still counts


def test_prepare_holds_what_predict_reuses():
    """``prepare`` does the conditioning work once: predict on a repeated prepared conditioning
    (the sampler's candidates and CFG halves) matches forward row by row, in one batch."""
    generator = small("hybrid")
    cond = condition(generator)
    with torch.no_grad():
        prepared = generator.prepare(cond, drop=torch.tensor([False, True]))
        assert prepared.aligned.length == 12 and prepared.context.length == 1 + 7
        assert prepared.context.mask[:, 0].all()  # the null token is always valid
        assert not prepared.context.mask[1, 1:].any()  # the dropped row sees the null token only
        repeated = prepared.repeat_interleave(3)
        codes, mask = codes_and_mask(b=6)
        logits = generator.predict(codes, mask, repeated)
        for i in range(6):
            row = generator(codes[i:i + 1], mask[i:i + 1], cond.index_select(torch.tensor([i // 3])),
                            drop=torch.tensor([i // 3 == 1]))
            torch.testing.assert_close(logits[i:i + 1], row, rtol=1e-4, atol=1e-5)


def test_predict_refuses_an_unprepared_conditioning():
    generator = small("adaln")
    codes, mask = codes_and_mask()
    with pytest.raises(ValueError, match="prepare"):
        generator.predict(codes, mask, condition(generator))


# -- errors and precision --------------------------------------------------------------------------


def test_aligned_length_must_match_the_codes():
    generator = small("adaln")
    codes, mask = codes_and_mask(l=10)
    with pytest.raises(UserError, match="12 frames .* codes have 10 frames"):
        generator(codes, mask, condition(generator, l=12))


def test_longer_than_max_frames_is_a_user_error():
    generator = small("seq2seq", max_frames=8)
    codes, mask = codes_and_mask(l=12)
    with pytest.raises(UserError, match="max_frames = 8"):
        generator(codes, mask, condition(generator))


def test_missing_conditioning_and_width_mismatch_are_user_errors():
    generator = small("hybrid")
    codes, mask = codes_and_mask()
    cond = condition(generator)
    with pytest.raises(UserError, match="needs Conditioning.context"):
        generator(codes, mask, Conditioning(aligned=cond.aligned))
    wide = cond.aligned.replace(values=torch.zeros(2, 12, 9))
    with pytest.raises(UserError, match="condition_dim 8"):
        generator(codes, mask, Conditioning(aligned=wide, context=cond.context))


def test_heads_must_give_an_even_head_size():
    registry = default_registry()
    with pytest.raises(PluginError, match="even head size"):
        registry.config_for("generator", "maskvat_adaln", {"width": 30, "heads": 10})


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bf16_autocast_matches_fp32(variant):
    """What the sampler's ``precision: bf16`` does on a CPU: same logits up to bf16 rounding."""
    generator = small(variant)
    codes, mask = codes_and_mask()
    cond = condition(generator)
    with torch.inference_mode():
        reference = generator(codes, mask, cond)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            prepared = generator.prepare(cond)
            fast = generator.predict(codes, mask, prepared)
    assert fast.dtype == torch.bfloat16
    assert float((fast.float() - reference).abs().max()) < 0.05 * float(reference.abs().max())


def test_weights_option_loads_an_exported_generator_strictly(tmp_path):
    from v2a.weights import WeightsError, save_state

    torch.manual_seed(1)
    trained = MaskVATGenerator(MaskVATConfig(**SMALL), variant="hybrid")
    save_state(trained.state_dict(), tmp_path / "generator.safetensors")
    torch.manual_seed(2)
    config = MaskVATConfig(**SMALL, weights=str(tmp_path / "generator.safetensors"))
    loaded = MaskVATGenerator(config, variant="hybrid")
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(WeightsError, match="does not fit the maskvat_adaln generator"):
        MaskVATGenerator(config, variant="adaln")  # no cross-attention: other parameters
    with pytest.raises(WeightsError, match="no published weights"):
        MaskVATGenerator(MaskVATConfig(**SMALL, weights="pretrained"), variant="hybrid")

"""The masked training objective (v2a.objective) with the three MaskVAT generators at small sizes."""

from __future__ import annotations

import pytest
import torch

from v2a import Conditioning, FeatureSequence
from v2a.objective import MaskedObjective
from v2a.registry import default_registry

VARIANTS = ["adaln", "seq2seq", "hybrid"]
K, VOCAB, DIM, L, RATE = 3, 16, 8, 16, 86.13


def small_generator(variant: str, seed: int = 0):
    torch.manual_seed(seed)
    return default_registry().build_from("generator", {
        "plugin": f"maskvat_{variant}", "width": 32, "layers": 2, "heads": 2,
        "n_codebooks": K, "codebook_size": VOCAB, "condition_dim": DIM,
    })


def mel_encoder():
    return default_registry().build_from("audio_encoder", {"plugin": "mel", "n_mels": 8, "n_fft": 256,
                                                            "hop_length": 64})


def batch(generator, b: int = 4, seed: int = 1):
    """A fixed batch: codes, a distinct conditioning per row, and a waveform per row."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, VOCAB, (b, K, L), generator=g)
    aligned = context = None
    if generator.uses_aligned:
        aligned = FeatureSequence(torch.randn(b, L, DIM, generator=g), rate=RATE)
    if generator.uses_context:
        mask = torch.ones(b, 5, dtype=torch.bool)
        mask[-1, 3:] = False
        context = FeatureSequence(torch.randn(b, 5, DIM, generator=g), rate=8.0, mask=mask)
    wav = torch.randn(b, 1, round(L / RATE * 16000), generator=g) * 0.1
    return codes, Conditioning(aligned=aligned, context=context), wav


def evaluate(objective, codes, condition, features, seeds=range(4)) -> dict[str, float]:
    """The terms averaged over a few fixed masks, without dropout or gradients."""
    objective.eval()
    with torch.no_grad():
        runs = [objective(codes, condition, audio_features=features,
                          generator=torch.Generator().manual_seed(1000 + s)) for s in seeds]
    objective.train()
    return {k: sum(float(r[k]) for r in runs) / len(runs) for k in runs[0]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_few_steps_overfit_a_fixed_batch(variant):
    generator = small_generator(variant)
    objective = MaskedObjective(generator, audio_encoder=mel_encoder(), level_policy="per_level",
                                condition_dropout=0.1, aux_regression_weight=0.1,
                                aux_contrastive_weight=0.1, frame_rate=RATE)
    codes, condition, wav = batch(generator)
    features = objective.audio_features(wav)
    before = evaluate(objective, codes, condition, features)
    optimiser = torch.optim.AdamW(objective.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        terms = objective(codes, condition, audio_features=features, generator=g)
        optimiser.zero_grad()
        terms["loss"].backward()
        optimiser.step()
    after = evaluate(objective, codes, condition, features)
    # Seq2Seq learns slowest: without an aligned sequence nothing tells fully hidden frames apart
    assert after["loss"] < 0.85 * before["loss"]
    assert after["ce"] < 0.85 * before["ce"]
    assert after["aux_regression"] < 0.8 * before["aux_regression"]
    assert after["accuracy"] > before["accuracy"] + 0.1


def test_joint_policy_trains_too():
    generator = small_generator("hybrid")
    objective = MaskedObjective(generator, level_policy="joint", aux_contrastive_weight=0.0)
    codes, condition, _ = batch(generator)
    before = evaluate(objective, codes, condition, None)
    optimiser = torch.optim.AdamW(objective.parameters(), lr=3e-3)
    for step in range(40):
        loss = objective(codes, condition, generator=torch.Generator().manual_seed(step))["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert evaluate(objective, codes, condition, None)["ce"] < 0.8 * before["ce"]


def test_terms_are_separate_and_the_loss_is_their_weighted_sum():
    generator = small_generator("hybrid")
    objective = MaskedObjective(generator, audio_encoder=mel_encoder(), aux_regression_weight=0.3,
                                aux_contrastive_weight=0.7, condition_dropout=0.0)
    codes, condition, wav = batch(generator)
    terms = objective(codes, condition, audio_features=objective.audio_features(wav),
                      generator=torch.Generator().manual_seed(0))
    assert {"loss", "ce", "aux_regression", "aux_contrastive", "accuracy", "mask_ratio"} <= set(terms)
    for name, value in terms.items():
        assert value.dim() == 0 and bool(torch.isfinite(value.detach())), name
    assert float(terms["ce"].detach()) > 0 and float(terms["aux_regression"].detach()) > 0
    assert float(terms["aux_contrastive"].detach()) > 0
    assert not terms["accuracy"].requires_grad and terms["loss"].requires_grad
    expected = terms["ce"] + 0.3 * terms["aux_regression"] + 0.7 * terms["aux_contrastive"]
    assert torch.allclose(terms["loss"], expected)
    assert 0.0 <= float(terms["accuracy"]) <= 1.0
    # the CE is the mean over the loss positions: a chance-level model is near log(vocab)
    assert abs(float(terms["ce"].detach()) - torch.log(torch.tensor(float(VOCAB)))) < 1.0


def test_heads_are_parameters_and_the_audio_encoder_is_not():
    generator = small_generator("adaln")
    encoder = mel_encoder()
    objective = MaskedObjective(generator, audio_encoder=encoder)
    names = dict(objective.named_parameters())
    assert {"regression_head.weight", "audio_projection.weight", "condition_projection.weight"} <= set(names)
    assert any(n.startswith("generator.") for n in names)
    assert objective.regression_head.out_features == encoder.dim
    assert not any("audio_encoder" in n for n in objective.state_dict())
    codes, condition, wav = batch(generator)
    terms = objective(codes, condition, audio_features=objective.audio_features(wav),
                      generator=torch.Generator().manual_seed(0))
    terms["loss"].backward()
    for head in ("regression_head", "audio_projection", "condition_projection"):
        grad = getattr(objective, head).weight.grad
        assert grad is not None and float(grad.abs().sum()) > 0, head


def test_contrastive_term_is_skipped_for_a_single_row_or_all_dropped():
    generator = small_generator("seq2seq")
    objective = MaskedObjective(generator, aux_contrastive_weight=1.0, condition_dropout=0.0)
    codes, condition, _ = batch(generator)
    one = objective(codes[:1], condition.index_select(torch.tensor([0])))
    assert float(one["aux_contrastive"]) == 0.0 and torch.isfinite(one["loss"])
    one["loss"].backward()  # still a valid graph
    objective.condition_dropout = 1.0
    dropped = objective(codes, condition)
    assert float(dropped["aux_contrastive"]) == 0.0


def test_condition_dropout_replaces_the_conditioning_in_training_only():
    generator = small_generator("hybrid")
    with torch.no_grad():  # make the conditioning matter from the start
        for p in generator.parameters():
            if p.dim() == 2 and float(p.abs().max()) == 0.0:
                p.normal_(0.0, 0.3)
    codes, condition, _ = batch(generator, seed=1)
    _, other, _ = batch(generator, seed=2)
    objective = MaskedObjective(generator, condition_dropout=1.0, aux_contrastive_weight=0.0)
    ce = lambda c: float(objective(codes, c, generator=torch.Generator().manual_seed(5))["ce"].detach())  # noqa: E731
    assert ce(condition) == pytest.approx(ce(other), abs=1e-6)  # every row dropped
    objective.eval()  # no dropout outside training
    assert ce(condition) != pytest.approx(ce(other), abs=1e-4)
    objective.train()
    objective.condition_dropout = 0.0
    assert ce(condition) != pytest.approx(ce(other), abs=1e-4)


def test_regression_needs_features_and_resamples_them():
    generator = small_generator("seq2seq")  # no aligned sequence: the frame rate must be given
    objective = MaskedObjective(generator, audio_encoder=mel_encoder(), aux_regression_weight=1.0)
    codes, condition, wav = batch(generator)
    with pytest.raises(ValueError, match="audio_features"):
        objective(codes, condition)
    features = objective.audio_features(wav)
    assert features.rate != RATE
    with pytest.raises(ValueError, match="frame_rate"):
        objective(codes, condition, audio_features=features)
    objective.frame_rate = RATE
    seed = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = objective(codes, condition, audio_features=features, generator=seed())["aux_regression"]
    shuffled = features.replace(values=features.values.flip(1))
    b = objective(codes, condition, audio_features=shuffled, generator=seed())["aux_regression"]
    assert float(a.detach()) > 0 and float(a.detach()) != pytest.approx(float(b.detach()))


def test_masks_and_dropout_are_reproducible_from_the_generator():
    generator = small_generator("adaln")
    objective = MaskedObjective(generator, condition_dropout=0.5)
    codes, condition, _ = batch(generator)
    run = lambda s: objective(codes, condition, generator=torch.Generator().manual_seed(s))  # noqa: E731
    assert float(run(3)["loss"].detach()) == float(run(3)["loss"].detach())
    assert float(run(3)["loss"].detach()) != float(run(4)["loss"].detach())


def test_bad_options_are_refused():
    generator = small_generator("adaln")
    with pytest.raises(ValueError, match="level policy"):
        MaskedObjective(generator, level_policy="interleaved")
    with pytest.raises(ValueError, match="condition_dropout"):
        MaskedObjective(generator, condition_dropout=1.5)

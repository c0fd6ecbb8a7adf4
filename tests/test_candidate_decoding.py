"""The reranker's candidates decoded in batches (:class:`v2a.generate.candidates.CandidateDecoder`):
a batch decodes each row as a call of its own does (within float32 rounding), the batch size
follows the measured time per row within the memory bound, and ``v2a generate``'s output does
not change."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from v2a.generate import VideoToAudio
from v2a.generate.candidates import CandidateDecoder
from v2a.generate.windows import one_decode_call
from v2a.recipe import build_frozen, load_recipe

ROOT = Path(__file__).resolve().parent.parent
EPS = torch.finfo(torch.float32).eps

# -- the same samples, batched or not ----------------------------------------------------------


def decoded_both_ways(codec, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``codes`` decoded in one call and one row per call."""
    with torch.inference_mode():
        batched = codec.decode(codes).float()
        rows = torch.cat([codec.decode(codes[i:i + 1]).float() for i in range(codes.shape[0])])
    return batched, rows


def test_spectral_codec_decodes_a_batch_as_its_rows():
    codec = build_frozen(load_recipe("tiny").choice("codec")).eval()
    torch.manual_seed(0)
    codes = torch.randint(0, codec.codebook_size, (4, codec.n_codebooks, 120))
    batched, rows = decoded_both_ways(codec, codes)
    # Batching changes only how the FFTs of Griffin-Lim are blocked and vectorised, i.e. the
    # order of float32 additions: each STFT or inverse STFT of n_fft points is off by at most
    # ~log2(n_fft) roundings (eps each) of the signal's scale, and each of the iterations does
    # one STFT and one inverse STFT, plus the final inverse STFT. Allow that, times 4 for the
    # window sums and the phase normalisation (seen here: ~3e-6 of the peak, 50x below this).
    iterations = codec.config.griffin_lim_iters
    steps = (2 * iterations + 1) * math.log2(codec.n_fft)
    tolerance = 4 * steps * EPS * float(rows.abs().max())
    assert batched.shape == rows.shape
    assert float((batched - rows).abs().max()) <= tolerance


def test_dac_decodes_a_batch_as_its_rows():
    pytest.importorskip("dac")
    recipe = load_recipe(ROOT / "recipes" / "maskvat_hybrid.yaml",
                         ["codec.model=16khz", "codec.decoder_dim=32"], random_weights=True)
    codec = build_frozen(recipe.choice("codec")).eval()
    torch.manual_seed(0)
    codes = torch.randint(0, codec.codebook_size, (3, codec.n_codebooks, 25))
    batched, rows = decoded_both_ways(codec, codes)
    # Batching changes the blocking of each convolution's sum of K = in_channels x kernel
    # float32 products (oneDNN picks its kernel by shape; IEEE float32 is kept, no bf16
    # down-conversion by default): a reordered K-term sum differs by at most (K - 1) eps of the
    # sum of its terms' magnitudes. Through D layers that compounds to about D (K - 1) eps of
    # the output's scale (activations, Snake included, have derivatives of order one).
    convs = [m for m in codec.model.decoder.modules()
             if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    depth = len(convs)
    terms = max(m.in_channels // m.groups * m.kernel_size[0] for m in convs)
    tolerance = depth * (terms - 1) * EPS * float(rows.abs().max())
    assert batched.shape == rows.shape
    assert float((batched - rows).abs().max()) <= tolerance


# -- the batch size: measured, within the memory bound ----------------------------------------


class CountingCodec:
    """A codec whose decode of ``n`` rows costs ``cost(n)`` virtual seconds on ``clock`` and
    returns ``[n, 1, 4]`` filled with each row's first code (so the order can be checked)."""

    channels, sample_rate, frame_rate = 1, 4, 1

    def __init__(self, cost):
        self.cost, self.now, self.calls = cost, 0.0, []

    def num_samples(self, frames: int) -> int:
        return 4 * frames

    def clock(self) -> float:
        return self.now

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        self.calls.append(codes.shape[0])
        self.now += self.cost(codes.shape[0])
        return codes[:, :1, :1].float().expand(-1, 1, 4)


def codes_of(rows: int) -> torch.Tensor:
    return torch.arange(rows).view(rows, 1, 1).expand(rows, 2, 1).contiguous()


def test_batches_grow_while_they_decode_a_row_faster():
    codec = CountingCodec(cost=lambda n: 1.0 + 0.1 * n)  # a fixed cost per call: batches pay
    decode = CandidateDecoder(codec=codec, clock=codec.clock, max_samples=10_000)
    wav = decode(codes_of(10))
    # a first row not timed, then 1.1, 0.6, 0.35 s per row; the last batch is short
    assert codec.calls == [1, 1, 2, 4, 2]
    assert torch.equal(wav[:, 0, 0], torch.arange(10.0))  # every row, in order
    codec.calls.clear()
    decode(codes_of(10))  # the next window of that length keeps the size settled on
    assert codec.calls == [4, 4, 2]


def test_batches_stay_single_rows_when_a_batch_is_no_faster():
    codec = CountingCodec(cost=lambda n: n * (1.0 + 0.2 * n))  # a batch is slower per row
    decode = CandidateDecoder(codec=codec, clock=codec.clock, max_samples=10_000)
    wav = decode(codes_of(5))
    assert codec.calls == [1, 1, 2, 1]  # 1.2 s per row, then 1.4: single rows from then on
    assert torch.equal(wav[:, 0, 0], torch.arange(5.0))
    codec.calls.clear()
    decode(codes_of(3))
    assert codec.calls == [1, 1, 1]


def test_a_batch_never_decodes_more_than_the_memory_bound():
    codec = CountingCodec(cost=lambda n: 1.0)  # the faster the bigger the batch
    decode = CandidateDecoder(codec=codec, clock=codec.clock, max_samples=8)  # 2 rows of 4
    decode(codes_of(7))
    assert codec.calls == [1, 1, 2, 2, 1]
    assert decode.max_rows(frames=1) == 2 and decode.max_rows(frames=100) == 1


# -- v2a generate's output ---------------------------------------------------------------------

#: The tiny recipe with a reranker (SCAV over mel features, random init) to pick among candidates.
RERANKED = ["reranker={plugin: scav, audio_encoder: {plugin: mel, sample_rate: 16000, "
            "n_fft: 256, hop_length: 128, n_mels: 8}, video_stream: motion, video_dim: 645, "
            "dim: 8, layers: 1, heads: 2, weights: none}"]


class OneCall:
    """Every candidate in one decode call, as the code was before batching was measured."""

    def __init__(self, codec):
        self.codec = codec

    def decode(self, codes):
        return self.codec.decode(codes).float(), [codes.shape[0] == 1] * codes.shape[0]


def test_generate_gives_what_one_decode_call_gave():
    model = VideoToAudio.from_recipe(load_recipe("tiny", RERANKED), warn=lambda _: None)
    seen = []
    rerank = model.rerank
    model.rerank = lambda wavs, streams: seen.append(wavs) or rerank(wavs, streams)
    video = ROOT / "examples" / "shapes.mp4"
    options = dict(seed=1, candidates=4, duration=2.0, steps=[2, 1])
    # the candidates decoded in batches, under a clock that makes a batch faster
    # two readings per timed call: 5 s for one row, then 2 s per row for two (batches of 1, 1, 2)
    clock = iter([0, 5, 0, 4]).__next__
    model.decode_candidates = CandidateDecoder(codec=model.codec, clock=clock)
    batched, _ = model.generate(video, **options)
    # as the code was before: all candidates in one call
    model.decode_candidates = OneCall(model.codec)
    one_call, _ = model.generate(video, **options)
    assert len(seen) == 2 and seen[0].shape == seen[1].shape
    # the candidates' samples agree within the rounding of test_spectral_codec_decodes_a_batch...
    steps = (2 * model.codec.config.griffin_lim_iters + 1) * math.log2(model.codec.n_fft)
    assert float((seen[0] - seen[1]).abs().max()) <= 4 * steps * EPS * float(seen[1].abs().max())
    # and the written audio, decoded from the chosen candidate's codes, is the same
    assert torch.equal(batched, one_call)


def counted_decodes(model) -> list[int]:
    """Rows of each ``model.codec.decode`` call from now on."""
    calls, decode = [], model.codec.decode
    model.codec.decode = lambda codes, length=None: calls.append(codes.shape[0]) or \
        decode(codes, length)
    return calls


def test_the_chosen_candidate_decoded_alone_is_not_decoded_again():
    model = VideoToAudio.from_recipe(load_recipe("tiny", RERANKED), warn=lambda _: None)
    video = ROOT / "examples" / "shapes.mp4"
    options = dict(seed=3, candidates=3, duration=2.0, steps=[2, 1])  # one generation window
    calls = counted_decodes(model)
    model.decode_candidates = CandidateDecoder(codec=model.codec, max_samples=1)  # one row a call
    kept, _ = model.generate(video, **options)
    assert calls == [1, 1, 1]  # the three candidates, and no decode of the chosen one's codes
    # decoded in one call of three, no candidate was decoded alone: the chosen one is decoded again
    calls.clear()
    model.decode_candidates = OneCall(model.codec)
    again, _ = model.generate(video, **options)
    assert calls == [3, 1]
    assert torch.equal(kept, again)  # what was kept is exactly the decode it saved


def test_a_kept_waveform_serves_only_the_codes_it_was_decoded_from():
    model = VideoToAudio.from_recipe(load_recipe("tiny", RERANKED), warn=lambda _: None)
    model.decode_candidates = CandidateDecoder(codec=model.codec, max_samples=1)
    video = ROOT / "examples" / "shapes.mp4"
    options = model.sampling_options(candidates=3, steps=[2, 1])

    def window(seconds: float) -> tuple[torch.Tensor, int, int]:
        """One window's chosen codes for the first ``seconds`` s, its samples and frames."""
        n = round(seconds * model.sample_rate)
        width = int(model.codec.num_frames(n))
        with torch.inference_mode():
            codes = model.sample_window(video, start=0.0, duration=seconds, width=width,
                                        prompt=None, seed=3, options=options)
        return codes, n, width

    codes, n, width = window(2.0)
    other = (codes + 1) % model.codec.codebook_size
    assert model.kept_candidate_wav(other, n, window=width) is None  # other codes: decode them
    codes, n, width = window(2.0)
    with torch.inference_mode():
        decoded = model.codec.decode(codes[None], length=n)[0].float()
    assert torch.equal(model.kept_candidate_wav(codes, n, window=width), decoded)
    assert model.kept_candidate_wav(codes, n, window=width) is None  # handed out once
    # codes that the output decode takes in several windows are decoded so, never kept
    codes, n, width = window(6.0)
    assert not one_decode_call(width, window=width // 4, context=model.decode_context_frames)
    assert model.kept_candidate_wav(codes, n, window=width // 4) is None

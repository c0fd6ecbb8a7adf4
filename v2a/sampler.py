"""Iterative confidence-based decoding (MaskGIT) for any :class:`~v2a.interfaces.MaskedGenerator`.

The RVQ levels are decoded coarse to fine. Level ``q`` takes ``steps[q]`` steps (a list shorter
than ``k`` repeats its last value). At step ``s`` of ``n`` every hidden position of level ``q`` is
sampled; then the least confident of the newly sampled ones are hidden again so that, per row,
``floor(m · cos(π/2 · (s + 1) / n))`` of the level's ``m`` initially hidden positions stay hidden
(at least one decoded per step, none left after the last). Known positions of a ``prompt`` are
never changed and count as decoded.

Sampling a position: classifier-free guidance ``uncond + cfg_scale · (cond - uncond)`` on the
level's logits, then temperature (annealed linearly from ``temperature`` at a level's first step
towards 0 at its end when ``anneal_temperature``), top-k, top-p, and a Gumbel-max draw
(temperature 0 = argmax).

Confidence (the choice of MaskGIT): the log-probability of the sampled token under the guided
logits at temperature 1, plus Gumbel noise scaled by ``remask_noise · (1 - (s + 1) / n)``, so
early steps explore and the last steps are greedy in confidence.

Randomness: candidate ``c`` of every video draws from its own ``torch.Generator`` seeded from
``(seed, c)`` (``numpy.random.SeedSequence``), a fixed amount per step of a level it decodes
(``l · vocab`` uniforms for the tokens, then ``l`` for the confidences). So the output of a
video depends neither on the other videos in the batch nor on how rows are batched, and a plain
loop over candidates (``benchmarks/bench_generate.py``) reproduces it token for token.

Speed: the generator's :meth:`~v2a.interfaces.MaskedGenerator.prepare` runs once per call, on
the conditional and unconditional rows together; the prepared conditioning is then indexed for
the ``candidates``; conditional and unconditional rows of every candidate go through one
``predict`` call per step under :func:`torch.inference_mode`; only the hidden positions of the
level being decoded are turned into probabilities. ``precision="bf16"`` runs a bfloat16 copy of
the generator (weights cast once and cached until they change; measured faster than autocast,
which casts the weights at every step), which uses AMX matrix units on CPUs that have them;
``"fp16"`` likewise (for GPUs). The sampling arithmetic after the logits is always float32.
``compile=True`` compiles the generator's repeated layers with ``torch.compile``
(:func:`compile_layers`): the first call pays the compilation, later calls run the compiled
kernels.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from v2a.errors import RecipeError
from v2a.interfaces import MaskedGenerator
from v2a.masking import masked_counts
from v2a.recipe import SamplingConfig
from v2a.sequences import Conditioning, FeatureSequence

Precision = Literal["fp32", "bf16", "fp16"]
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
}


# -- inputs -------------------------------------------------------------------------------------


@dataclass
class Prompt:
    """Codes to keep: ``codes: [b, k, l]`` int64 and ``known: [b, k, l]`` bool (True = keep).

    The values of ``codes`` where ``known`` is False are ignored."""

    codes: Tensor
    known: Tensor


@dataclass
class PreparedCondition:
    """The conditioning of ``b`` videos as :meth:`MaskedGenerator.predict` consumes it.

    ``rows`` holds the conditional rows ``[0, b)`` and/or the unconditional rows (dropped
    conditioning), in the order of ``parts``; made by :func:`prepare_condition`."""

    rows: Conditioning
    batch: int
    parts: tuple[str, ...]


def guidance_parts(cfg_scale: float) -> tuple[str, ...]:
    """Which passes a guidance scale needs: 1 = conditional only, 0 = unconditional only."""
    if cfg_scale == 1:
        return ("cond",)
    if cfg_scale == 0:
        return ("uncond",)
    return ("cond", "uncond")


def prepare_condition(
    generator: MaskedGenerator, condition: Conditioning, *, cfg_scale: float,
    negative: Conditioning | None = None,
) -> PreparedCondition:
    """Run ``generator.prepare`` once for the ``b`` videos of ``condition``: the conditional and
    unconditional rows ``cfg_scale`` needs, in one call on a ``[len(parts) · b]`` batch.

    The unconditional rows are ``condition`` with its conditioning dropped, or, with
    ``negative`` (``b`` rows, e.g. the fuser's output for a negative prompt), ``negative``
    itself prepared without dropping (its context padded to the longer of the two)."""
    b = condition.batch_size
    parts = guidance_parts(cfg_scale)
    device = (condition.aligned or condition.context).values.device
    if negative is not None and "uncond" in parts:
        if negative.batch_size != b:
            raise ValueError(f"negative has {negative.batch_size} rows for {b} videos")
        by_part = {"cond": condition, "uncond": negative.to(device)}
        rows = generator.prepare(cat_conditionings([by_part[p] for p in parts]))
        return PreparedCondition(rows=rows, batch=b, parts=parts)
    index = torch.arange(b, device=device).repeat(len(parts))
    drop = torch.tensor([p == "uncond" for p in parts], device=device).repeat_interleave(b)
    rows = generator.prepare(condition.index_select(index), drop=drop)
    return PreparedCondition(rows=rows, batch=b, parts=parts)


def cat_conditionings(conditionings: Sequence[Conditioning]) -> Conditioning:
    """Conditionings of the same parts stacked along the batch; contexts of different lengths
    are padded at the end (masked out, which never changes a generator's result)."""
    def stacked(part: str) -> FeatureSequence | None:
        seqs = [getattr(c, part) for c in conditionings]
        if seqs[0] is None:
            return None
        length = max(s.length for s in seqs)
        padded = [s if s.length == length else s.replace(
            values=F.pad(s.values, (0, 0, 0, length - s.length)),
            mask=F.pad(s.valid_mask(), (0, length - s.length), value=False)) for s in seqs]
        masks = None if all(s.mask is None for s in padded) else \
            torch.cat([s.valid_mask() for s in padded])
        return padded[0].replace(values=torch.cat([s.values for s in padded]), mask=masks)

    return Conditioning(aligned=stacked("aligned"), context=stacked("context"))


def level_steps(steps: int | Sequence[int], n_codebooks: int) -> list[int]:
    """Steps per RVQ level: an int for every level, or a list whose last value repeats."""
    steps = [steps] if isinstance(steps, int) else list(steps)
    if not steps or any(int(s) < 1 for s in steps):
        raise ValueError(f"steps must be positive integers, got {steps}")
    return [int(steps[min(q, len(steps) - 1)]) for q in range(n_codebooks)]


# -- randomness ---------------------------------------------------------------------------------


def candidate_generator(
    seed: int, candidate: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """The random stream of candidate ``candidate`` under ``seed`` (independent across both)."""
    state = np.random.SeedSequence([int(seed) % 2**63, int(candidate)]).generate_state(2, np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


def draw_noise(
    generators: Sequence[torch.Generator], length: int, vocab: int, device
) -> tuple[Tensor, Tensor]:
    """One step's uniforms per row: ``[n, length, vocab]`` for tokens, ``[n, length]`` for
    confidences, each row from its own generator, tokens first."""
    tokens, confidence = [], []
    for g in generators:
        tokens.append(torch.rand(length, vocab, generator=g, device=device))
        confidence.append(torch.rand(length, generator=g, device=device))
    return torch.stack(tokens), torch.stack(confidence)


def gumbel(uniform: Tensor) -> Tensor:
    """Standard Gumbel noise from uniforms in ``[0, 1)``."""
    tiny = torch.finfo(uniform.dtype).tiny
    return -torch.log(-torch.log(uniform.clamp(min=tiny, max=1.0 - 1e-7)))


# -- one step -----------------------------------------------------------------------------------


def step_temperature(temperature: float, step: int, steps: int, anneal: bool) -> float:
    """Temperature at ``step`` of a level's ``steps``: linear from ``temperature`` towards 0."""
    return temperature * (1.0 - step / steps) if anneal else temperature


def pick_tokens(
    logits: Tensor,
    uniform: Tensor,
    *,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample one token per row of ``logits: [m, vocab]`` (guided, float32).

    ``uniform: [m, vocab]`` drives a Gumbel-max draw. Returns ``tokens: [m]`` int64 and their
    log-probabilities under ``logits`` at temperature 1 ``[m]`` (the confidence before noise).
    """
    vocab = logits.shape[-1]
    if temperature <= 0:
        tokens = logits.argmax(dim=-1)
    else:
        scores, index = logits / temperature, None
        if top_k is not None and top_k < vocab:
            scores, index = scores.topk(top_k, dim=-1)  # sorted, descending
        if top_p is not None and top_p < 1.0:
            if index is None:
                scores, index = scores.sort(dim=-1, descending=True)
            probs = scores.softmax(dim=-1)
            before = probs.cumsum(dim=-1) - probs  # mass of the better tokens
            scores = scores.masked_fill(before > top_p, -torch.inf)  # the best one always stays
        noise = gumbel(uniform if index is None else uniform.gather(-1, index))
        choice = (scores + noise).argmax(dim=-1, keepdim=True)
        tokens = (choice if index is None else index.gather(-1, choice)).squeeze(-1)
    logp = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(dim=-1)
    return tokens, logp


def remask(confidence: Tensor, hidden: Tensor, keep_hidden: Tensor) -> Tensor:
    """``[n, l]`` bool: per row, the ``keep_hidden[n]`` least confident of the ``hidden`` positions
    (``confidence``, ``hidden``: ``[n, l]``); ties go to the earlier position."""
    score = confidence.masked_fill(~hidden, torch.inf)
    rank = score.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
    return hidden & (rank < keep_hidden.unsqueeze(1))


def decode_step(
    cond: Tensor | None,
    uncond: Tensor | None,
    hidden: Tensor,
    keep_hidden: Tensor,
    token_uniform: Tensor,
    confidence_uniform: Tensor,
    *,
    cfg_scale: float,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    noise_scale: float,
) -> tuple[Tensor, Tensor]:
    """One decoding step of a level for ``n`` rows.

    ``cond``, ``uncond``: ``[n, l, vocab]`` logits of the level (either may be ``None`` when
    ``cfg_scale`` does not need it); ``hidden: [n, l]`` the positions to sample;
    ``keep_hidden: [n]`` how many of them stay hidden; the uniforms from :func:`draw_noise`.
    Returns ``tokens: [n, l]`` (sampled where ``hidden``, 0 elsewhere) and the new hidden mask.
    """
    if cfg_scale == 1:
        logits = cond[hidden].float()
    elif cfg_scale == 0:
        logits = uncond[hidden].float()
    else:  # guidance on the hidden positions of the level only
        u = uncond[hidden].float()
        logits = u + cfg_scale * (cond[hidden].float() - u)
    picked, logp = pick_tokens(
        logits, token_uniform[hidden], temperature=temperature, top_k=top_k, top_p=top_p
    )
    tokens = torch.zeros(hidden.shape, dtype=torch.int64, device=hidden.device)
    tokens[hidden] = picked
    confidence = torch.full(hidden.shape, torch.inf, device=hidden.device)
    confidence[hidden] = logp + noise_scale * gumbel(confidence_uniform[hidden])
    return tokens, remask(confidence, hidden, keep_hidden)


# -- precision ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _evaluating(module: torch.nn.Module):
    """``module`` in eval mode inside the block, its training flag restored after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


#: Half-precision copies by generator, with the dtype and weights they were cast from.
_HALF_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_state(module: torch.nn.Module) -> tuple:
    """Changes when any parameter or buffer is replaced or modified in place (optimiser step,
    ``load_state_dict``): tensor identity, storage and version counter."""
    tensors = list(module.parameters()) + list(module.buffers())
    return tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


def half_copy(generator: MaskedGenerator, dtype: torch.dtype = torch.bfloat16) -> MaskedGenerator:
    """A copy of ``generator`` in ``dtype`` (bfloat16 or float16), in eval mode, without
    gradients; the original is left untouched. Cast once and reused while the generator's
    weights do not change."""
    state = (dtype, _weights_state(generator))
    cached = _HALF_COPIES.get(generator)
    if cached is not None and cached[0] == state:
        return cached[1]
    with torch.no_grad():  # cast tensor by tensor: no full fp32 duplicate on the way
        memo = {}
        for tensor in list(generator.parameters()) + list(generator.buffers()):
            cast = tensor.detach()
            cast = cast.to(dtype) if cast.is_floating_point() else cast.clone()
            if isinstance(tensor, torch.nn.Parameter):
                cast = torch.nn.Parameter(cast, requires_grad=False)
            memo[id(tensor)] = cast
        twin = copy.deepcopy(generator, memo).eval()
    _HALF_COPIES[generator] = (state, twin)
    return twin


# -- speed switches -----------------------------------------------------------------------------


def compile_layers(module: torch.nn.Module) -> list[str]:
    """Compile, in place with ``torch.compile``, every layer held in an ``nn.ModuleList`` of
    ``module`` (a transformer's blocks; a ``ModuleList`` inside such a layer is compiled with
    it) and return their names. Only compiling the repeated layers ("regional" compilation)
    keeps compilation short: layers of one class and shape share one compiled graph.

    Only how each layer is called changes: parameter names, the state dict and the arithmetic
    stay as they were (the kernels may round differently; dropout draws from inductor's own
    random stream, seeded by torch's), and a deep copy (the EMA weights, :func:`half_copy`)
    is an eager module. Calling it again compiles nothing more. Compilation happens on each
    layer's first call; on a CPU it needs a C++ compiler."""
    layers: list[str] = []
    for name, child in module.named_modules():
        if not isinstance(child, torch.nn.ModuleList):
            continue
        if any(name.startswith(f"{layer}.") for layer in layers):
            continue  # inside a layer compiled already
        for index, layer in enumerate(child):
            layers.append(f"{name}.{index}" if name else str(index))
            if layer._compiled_call_impl is None:
                layer.compile()
    return layers


#: The C++ compilers inductor looks for on a CPU (after ``$CXX``).
CPU_COMPILERS = ("g++", "c++", "clang++")


def require_compiler(device: torch.device | str, switch: str) -> None:
    """A :class:`~v2a.errors.RecipeError` naming ``switch`` (``training.compile``, ...) when
    compiling for a CPU ``device`` would fail at the first step: inductor builds CPU kernels
    with a C++ compiler, and none is on the ``PATH``. GPUs need none (Triton)."""
    if torch.device(device).type != "cpu":
        return
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else list(CPU_COMPILERS)
    if not any(shutil.which(c) for c in candidates):
        raise RecipeError(f"{switch}=true on a CPU needs a C++ compiler ({' or '.join(candidates)}), "
                          f"and there is none on the PATH; install one, or set {switch}=false")


def allow_tf32(device: torch.device | str) -> None:
    """On a CUDA device, let float32 matrix products and convolutions run on TF32 tensor cores
    (inputs rounded to a 10-bit mantissa, float32 accumulation; several times the float32
    rate). The switches are torch's, so this holds for the whole process; on any other device
    nothing changes (CPU arithmetic stays float32)."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


# -- sampling -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Decoding:
    """How :func:`sample` decodes (the module docstring says what each option does): ``steps``
    per RVQ level (:func:`level_steps`), the temperature and its annealing, ``top_k``/``top_p``,
    the guidance scale ``cfg_scale`` and the confidence noise ``remask_noise``. Refuses a
    ``top_k`` below 1 and a ``top_p`` outside ``(0, 1]`` (``ValueError``)."""

    steps: int | Sequence[int] = (16, 8, 4, 2, 1)
    temperature: float = 1.0
    anneal_temperature: bool = True
    top_k: int | None = None
    top_p: float | None = None
    cfg_scale: float = 3.0
    remask_noise: float = 4.5

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be positive, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")

    def per_level(self, n_codebooks: int) -> list[int]:
        """The steps of each of ``n_codebooks`` levels (``ValueError`` for a step below 1)."""
        return level_steps(self.steps, n_codebooks)

    def step_options(self, step: int, steps: int) -> dict:
        """The keyword options of :func:`decode_step` at ``step`` of a level's ``steps``."""
        return dict(cfg_scale=self.cfg_scale,
                    temperature=step_temperature(self.temperature, step, steps,
                                                 self.anneal_temperature),
                    top_k=self.top_k, top_p=self.top_p,
                    noise_scale=self.remask_noise * (1.0 - (step + 1) / steps))


def recipe_sampling(sampling: SamplingConfig) -> dict:
    """The keyword options of :func:`sample` that a recipe's ``sampling`` section gives: the
    :class:`Decoding` fields it has, ``candidates``, ``seed``, ``precision`` and ``compile``."""
    return dict(steps=list(sampling.steps), temperature=sampling.temperature,
                anneal_temperature=sampling.anneal_temperature, top_k=sampling.top_k,
                top_p=sampling.top_p, cfg_scale=sampling.cfg_scale,
                candidates=sampling.candidates, seed=sampling.seed, precision=sampling.precision,
                compile=sampling.compile)


def initial_state(prompt: Prompt | tuple[Tensor, Tensor] | None, *, batch: int, n_codebooks: int,
                  num_frames: int, candidates: int, device) -> tuple[Tensor, Tensor]:
    """``codes`` int64 and ``hidden`` bool, ``[batch · candidates, k, num_frames]``, before the
    first step: everything hidden, or, with a ``prompt`` of ``[batch, k, num_frames]``, its known
    codes in place (repeated for each candidate of a video) and only the rest hidden."""
    n = batch * candidates
    codes = torch.zeros(n, n_codebooks, num_frames, dtype=torch.int64, device=device)
    hidden = torch.ones(n, n_codebooks, num_frames, dtype=torch.bool, device=device)
    if prompt is None:
        return codes, hidden
    p_codes, known = prompt if isinstance(prompt, tuple) else (prompt.codes, prompt.known)
    if tuple(p_codes.shape) != (batch, n_codebooks, num_frames) or p_codes.shape != known.shape:
        raise ValueError(f"prompt codes and known must be [b, k, l] = {[batch, n_codebooks, num_frames]}")
    known = known.to(device).bool().repeat_interleave(candidates, dim=0)
    p_codes = p_codes.to(device).long().repeat_interleave(candidates, dim=0)
    return torch.where(known, p_codes, codes), ~known


def draw_level_noise(generators: Sequence[torch.Generator], active: Tensor, length: int,
                     vocab: int, device) -> tuple[Tensor, Tensor]:
    """:func:`draw_noise` for the rows of ``active: [n]`` (bool) only, from their own
    generators; the other rows (nothing to decode at this level) draw nothing and get zeros."""
    rows = active.nonzero().squeeze(1)
    chosen = [generators[i] for i in rows.tolist()]  # one copy to the host, not one per row
    token_u, conf_u = draw_noise(chosen, length, vocab, device)
    n = active.shape[0]
    if len(rows) < n:
        token_u = token_u.new_zeros(n, length, vocab).index_copy_(0, rows, token_u)
        conf_u = conf_u.new_zeros(n, length).index_copy_(0, rows, conf_u)
    return token_u, conf_u


#: ``logits(codes, hidden, level)``: the conditional and unconditional logits ``[n, l, vocab]``
#: of ``level`` for the rows of ``codes``/``hidden`` ``[n, k, l]`` (None for a pass the guidance
#: scale does not need).
LevelLogits = Callable[[Tensor, Tensor, int], tuple[Tensor | None, Tensor | None]]


def decode_level(codes: Tensor, hidden: Tensor, *, level: int, steps: int,
                 generators: Sequence[torch.Generator], vocab: int, decoding: Decoding,
                 logits: LevelLogits) -> None:
    """Decode level ``level`` of ``codes``/``hidden`` ``[n, k, l]`` in place, in ``steps``
    steps: each row draws its step's uniforms from its own generator (rows with nothing hidden
    at the level draw nothing), ``logits`` gives the level's logits and :func:`decode_step`
    samples the hidden positions and hides the least confident again."""
    total = hidden[:, level].sum(dim=1)  # [n]
    active = total > 0  # rows that decode this level
    if not bool(active.any()):
        return
    counts = masked_counts(total.cpu(), steps).to(codes.device)  # [steps, n]
    for s in range(steps):
        token_u, conf_u = draw_level_noise(generators, active, codes.shape[-1], vocab, codes.device)
        level_hidden = hidden[:, level]
        if not level_hidden.any():
            continue
        cond, uncond = logits(codes, hidden, level)
        tokens, still = decode_step(cond, uncond, level_hidden, counts[s], token_u, conf_u,
                                    **decoding.step_options(s, steps))
        codes[:, level] = torch.where(level_hidden, tokens, codes[:, level])
        hidden[:, level] = still


def _prepared_for(model: MaskedGenerator, condition: Conditioning | PreparedCondition, *,
                  cfg_scale: float, device, dtype: torch.dtype,
                  negative: Conditioning | None = None) -> PreparedCondition:
    """``condition`` (and ``negative``) prepared by ``model`` on its device and dtype (a
    :class:`PreparedCondition` is checked against ``cfg_scale`` and moved, not prepared again)."""
    if not isinstance(condition, PreparedCondition):
        if negative is not None:
            negative = negative.to(device=device, dtype=dtype)
        return prepare_condition(model, condition.to(device=device, dtype=dtype),
                                 cfg_scale=cfg_scale, negative=negative)
    if negative is not None:
        raise ValueError("pass negative to prepare_condition, not with a PreparedCondition")
    if condition.parts != guidance_parts(cfg_scale):
        raise ValueError(f"condition was prepared for passes {condition.parts}, cfg_scale "
                         f"{cfg_scale} needs {guidance_parts(cfg_scale)}")
    return PreparedCondition(rows=condition.rows.to(device=device, dtype=dtype),
                             batch=condition.batch, parts=condition.parts)


def sample(
    generator: MaskedGenerator,
    condition: Conditioning | PreparedCondition,
    *,
    num_frames: int,
    candidates: int = 1,
    seed: int = 0,
    precision: Precision = "fp32",
    prompt: Prompt | tuple[Tensor, Tensor] | None = None,
    compile: bool = False,
    negative: Conditioning | None = None,
    **options,
) -> Tensor:
    """Generate ``candidates`` code sequences of ``num_frames`` frames per video.

    ``condition`` is the fuser's output for ``b`` videos (or a :class:`PreparedCondition` from
    :func:`prepare_condition`, prepared with the same ``cfg_scale`` and generator).
    ``options`` are the fields of :class:`Decoding` (``steps``, ``temperature``,
    ``anneal_temperature``, ``top_k``, ``top_p``, ``cfg_scale``, ``remask_noise``).
    Returns ``codes: [b · candidates, k, num_frames]`` int64, the candidates of video ``i`` in
    rows ``i · candidates ... (i + 1) · candidates - 1``. ``compile``: run the generator that
    decodes (``generator`` itself in fp32, its cached half-precision copy otherwise) with its
    layers compiled, in place (:func:`compile_layers`). ``negative``: the conditioning the
    unconditional rows of guidance are prepared from (a negative prompt's), instead of
    ``condition`` dropped (:func:`prepare_condition`). See the module docstring for the
    options.
    """
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}")
    if candidates < 1 or num_frames < 1:
        raise ValueError("candidates and num_frames must be positive")
    decoding = Decoding(**options)
    k, vocab = generator.n_codebooks, generator.codebook_size
    per_level = decoding.per_level(k)
    device = next(generator.parameters()).device
    dtype = DTYPES[precision]
    model = half_copy(generator, dtype) if dtype != torch.float32 else generator
    if compile:
        require_compiler(device, "sampling.compile")
        compile_layers(model)

    with _evaluating(model), torch.inference_mode():
        # conditioning: prepared once per call, then one row per candidate and pass
        prepared = _prepared_for(model, condition, cfg_scale=decoding.cfg_scale, device=device,
                                 dtype=dtype, negative=negative)
        b, passes = prepared.batch, len(prepared.parts)
        n = b * candidates
        per_pass = torch.arange(b, device=device).repeat_interleave(candidates)  # [n]
        rows = prepared.rows.index_select(torch.cat([per_pass + p * b for p in range(passes)]))
        codes, hidden = initial_state(prompt, batch=b, n_codebooks=k, num_frames=num_frames,
                                      candidates=candidates, device=device)
        generators = [
            candidate_generator(seed, c, device) for _ in range(b) for c in range(candidates)
        ]

        def level_logits(codes: Tensor, hidden: Tensor, level: int):
            # every candidate's conditional and unconditional rows in one call; only this
            # level's head is computed
            logits = model.predict(codes.repeat(passes, 1, 1), hidden.repeat(passes, 1, 1), rows,
                                   level=level)
            by_part = dict(zip(prepared.parts, logits[:, 0].split(n)))
            return by_part.get("cond"), by_part.get("uncond")

        for q in range(k):
            decode_level(codes, hidden, level=q, steps=per_level[q], generators=generators,
                         vocab=vocab, decoding=decoding, logits=level_logits)
    return codes

"""The SCAV reranker's implementation: distances between embedding sequences, the projectors,
:class:`Scav` and its training task :class:`ScavTrainingTask` (the plug-in, its options and its
documentation are :mod:`v2a_plugins.rerankers.scav`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from v2a import FeatureSequence, Reranker, TrainingTask
from v2a.errors import RecipeError, UserError
from v2a.registry import default_registry
from v2a.tasks import TrainingError
from v2a.weights import (
    PRETRAINED, WeightsError, is_random, load_checkpoint, load_into, local_file, save_state,
)
from v2a_plugins.rerankers.scav import NOT_PUBLISHED, ScavConfig

if TYPE_CHECKING:
    from v2a.items import Batch
    from v2a.recipe import Recipe

#: Periods (seconds) of the sinusoidal time embedding: from a tenth of a second (finer than a
#: CLIP frame at 8 fps) to 100 s (longer than any clip), geometrically spaced.
MIN_PERIOD = 0.1
MAX_PERIOD = 100.0
#: Initial temperature of the contrastive loss (CLIP's), and the smallest it may become.
INIT_TEMPERATURE = 0.07
MIN_TEMPERATURE = 0.01


# -- helpers ---------------------------------------------------------------------------------------


def time_embedding(times: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """``times: [t]`` seconds → ``[t, dim]`` sines and cosines of periods MIN_PERIOD..MAX_PERIOD."""
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float64, device=times.device) / max(half - 1, 1)
    periods = MIN_PERIOD * (MAX_PERIOD / MIN_PERIOD) ** exponent  # [half]
    angles = 2 * math.pi * times.to(torch.float64).unsqueeze(1) / periods  # [t, half]
    embedding = torch.cat([angles.sin(), angles.cos()], dim=1)
    return F.pad(embedding, (0, dim - 2 * half)).to(dtype)  # odd dim: one zero column


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """``values: [b, t, ...]``, ``mask: [b, t]`` → mean over the real steps ``[b, ...]``."""
    weights = mask.to(values.dtype)
    weights = weights.reshape(*weights.shape, *([1] * (values.dim() - 2)))
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


# -- distances between sequences -------------------------------------------------------------------


def common_grid(x: FeatureSequence, y: FeatureSequence) -> tuple[float, int, float]:
    """``(rate, length, start)`` of the time grid two sequences are compared on: the faster
    rate, over the span both cover (a step ``i`` of a sequence covers ``[start + i / rate,
    start + (i + 1) / rate)``)."""
    rate = max(x.rate, y.rate)
    start = max(x.start, y.start)
    end = min(x.start + x.duration, y.start + y.duration)
    length = max(1, math.floor((end - start) * rate + 1e-6))
    return rate, length, start


def interpolated_euclidean(x: FeatureSequence, y: FeatureSequence) -> Tensor:
    """``[m]``: mean per-step L2 distance of paired rows resampled onto their common grid.

    Steps that are padding in either resampled sequence are left out.
    """
    rate, length, start = common_grid(x, y)
    xs, ys = x.resample(rate, length, start), y.resample(rate, length, start)
    step = torch.linalg.vector_norm(xs.values - ys.values, dim=-1)  # [m, length]
    return masked_mean(step, xs.valid_mask() & ys.valid_mask())


def dtw(x: FeatureSequence, y: FeatureSequence) -> Tensor:
    """``[m]``: dynamic time warping cost of paired rows divided by the length of the path.

    ``D[i, j] = C[i, j] + min(D[i-1, j-1], D[i-1, j], D[i, j-1])`` on the per-step L2 cost
    ``C: [m, t_x, t_y]``, read at each row's last real steps (see :func:`dtw_from_cost`).
    """
    exact = "donot_use_mm_for_euclid_dist"  # zero for identical steps, no cancellation
    cost = torch.cdist(x.values, y.values, compute_mode=exact)  # [m, tx, ty]
    return dtw_from_cost(cost, x.valid_mask().sum(dim=1), y.valid_mask().sum(dim=1))


def dtw_from_cost(cost: Tensor, lx: Tensor, ly: Tensor) -> Tensor:
    """``cost: [m, t_x, t_y]``, real lengths ``lx, ly: [m]`` → ``[m]`` DTW cost / path length.

    The recursion runs over anti-diagonals ``k = i + j``; diagonal ``k`` is stored indexed by
    ``i`` (``[m, t_x]``, ``inf`` where ``j = k - i`` falls outside ``[0, t_y)``), so the Python
    loop has ``t_x + t_y - 1`` iterations. Ties prefer the diagonal step.
    """
    m, tx, ty = cost.shape
    device = cost.device

    # the cost skewed onto anti-diagonals: skewed[:, k, i] = cost[:, i, k - i] (inf outside)
    diagonals = tx + ty - 1
    j = torch.arange(diagonals, device=device)[:, None] - torch.arange(tx, device=device)  # [K, tx]
    inside = (j >= 0) & (j < ty)
    index = rearrange(j.clamp(0, ty - 1), "k i -> 1 i k").expand(m, tx, diagonals)
    skewed = torch.where(inside, rearrange(cost.gather(2, index), "m i k -> m k i"), torch.inf)

    inf = torch.full((m, 1), torch.inf, device=device, dtype=cost.dtype)
    shift = lambda d: torch.cat([inf, d[:, :-1]], dim=1)  # noqa: E731  d[i] -> d[i - 1]
    # diagonals k - 2 and k - 1, and the lengths of their best paths
    d_prev2, d_prev = torch.full_like(skewed[:, 0], torch.inf), skewed[:, 0]
    n_prev2, n_prev = torch.ones_like(d_prev), torch.ones_like(d_prev)
    costs, lengths = [d_prev], [n_prev]
    for k in range(1, diagonals):
        # D[i - 1, j - 1], D[i - 1, j], D[i, j - 1]
        diagonal, up, left = shift(d_prev2), shift(d_prev), d_prev
        d = skewed[:, k] + torch.minimum(diagonal, torch.minimum(up, left))
        with torch.no_grad():  # the length of the chosen path; ties prefer the diagonal step
            straight = torch.where(up <= left, shift(n_prev), n_prev)
            n = torch.where(diagonal <= torch.minimum(up, left), shift(n_prev2), straight) + 1
        costs.append(d)
        lengths.append(n)
        d_prev2, d_prev, n_prev2, n_prev = d_prev, d, n_prev, n
    k_end, i_end = (lx + ly - 2).clamp(min=0), (lx - 1).clamp(min=0)
    rows = torch.arange(m, device=device)
    total = torch.stack(costs, dim=1)[rows, k_end, i_end]
    return total / torch.stack(lengths, dim=1)[rows, k_end, i_end]


def cosine_mean(x: FeatureSequence, y: FeatureSequence) -> Tensor:
    """``[m]``: one minus the cosine similarity of the paired rows' mean-pooled sequences."""
    mx, my = masked_mean(x.values, x.valid_mask()), masked_mean(y.values, y.valid_mask())
    return (1 - F.cosine_similarity(mx, my, dim=-1)).clamp(min=0)


def pairwise_interpolated_euclidean(x: FeatureSequence, y: FeatureSequence) -> Tensor:
    """``[b_x, b_y]``: :func:`interpolated_euclidean` of every row of ``x`` with every row of
    ``y``, each sequence resampled once (memory ``b_x * b_y * steps``, not ``* dim``)."""
    rate, length, start = common_grid(x, y)
    xs, ys = x.resample(rate, length, start), y.resample(rate, length, start)
    exact = "donot_use_mm_for_euclid_dist"
    step = torch.cdist(
        rearrange(xs.values, "b t d -> t b d"), rearrange(ys.values, "b t d -> t b d"),
        compute_mode=exact,
    )  # [t, b_x, b_y]
    both = rearrange(xs.valid_mask(), "i t -> i 1 t") & rearrange(ys.valid_mask(), "j t -> 1 j t")
    weights = both.to(step.dtype)
    total = (rearrange(step, "t i j -> i j t") * weights).sum(dim=-1)
    return total / weights.sum(dim=-1).clamp(min=1)


def pairwise_dtw(x: FeatureSequence, y: FeatureSequence) -> Tensor:
    """``[b_x, b_y]``: :func:`dtw` of every row of ``x`` with every row of ``y`` (one cdist)."""
    bx, by, tx, ty = x.batch_size, y.batch_size, x.length, y.length
    exact = "donot_use_mm_for_euclid_dist"
    cost = torch.cdist(
        rearrange(x.values, "b t d -> (b t) d"), rearrange(y.values, "b t d -> (b t) d"),
        compute_mode=exact,
    )
    cost = rearrange(cost, "(i s) (j u) -> (i j) s u", i=bx, s=tx, j=by, u=ty)
    lx = x.valid_mask().sum(dim=1).repeat_interleave(by)
    ly = y.valid_mask().sum(dim=1).repeat(bx)
    return rearrange(dtw_from_cost(cost, lx, ly), "(i j) -> i j", i=bx)


def pairwise_cosine_mean(x: FeatureSequence, y: FeatureSequence) -> Tensor:
    """``[b_x, b_y]``: :func:`cosine_mean` of every row of ``x`` with every row of ``y``."""
    mx = F.normalize(masked_mean(x.values, x.valid_mask()), dim=-1)
    my = F.normalize(masked_mean(y.values, y.valid_mask()), dim=-1)
    return (1 - mx @ my.T).clamp(min=0)


#: Each distance: paired rows ``[m]`` (scoring) and all pairs ``[b_x, b_y]`` (training).
DISTANCES = {
    "interpolated_euclidean": (interpolated_euclidean, pairwise_interpolated_euclidean),
    "dtw": (dtw, pairwise_dtw),
    "cosine_mean": (cosine_mean, pairwise_cosine_mean),
}


# -- projector -------------------------------------------------------------------------------------


class Block(nn.Module):
    """Pre-LN transformer block; padded steps (``mask`` False) are never attended to."""

    def __init__(self, *, dim: int, heads: int, ffn_mult: int = 4):
        super().__init__()
        assert dim % heads == 0, "SCAV dim must be divisible by heads"
        self.heads = heads
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, ffn_mult * dim), nn.GELU(),
            nn.Linear(ffn_mult * dim, dim),
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # x: [b, t, dim], mask: [b, t]
        qkv = self.qkv(self.attn_norm(x))
        q, k, v = rearrange(qkv, "b t (n h e) -> n b h t e", n=3, h=self.heads)
        keys = rearrange(mask, "b t -> b 1 1 t")
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)
        x = x + self.attn_out(rearrange(attended, "b h t e -> b t (h e)"))
        return x + self.ffn(x)


class SequenceProjector(nn.Module):
    """``[b, t, in_dim]`` at any rate → ``[b, t, dim]`` unit-norm embeddings, same rate and mask."""

    def __init__(self, *, in_dim: int, dim: int, layers: int, heads: int):
        super().__init__()
        self.dim = dim
        self.input = nn.Linear(in_dim, dim)  # no norm before it: a feature's level is information
        self.blocks = nn.ModuleList([Block(dim=dim, heads=heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.output = nn.Linear(dim, dim)

    def forward(self, seq: FeatureSequence) -> FeatureSequence:
        mask = seq.valid_mask()  # [b, t]
        values = seq.values.masked_fill(~mask.unsqueeze(-1), 0.0)  # padding never reaches a sum
        x = self.input(values)
        x = x + time_embedding(seq.times().to(x.device), self.dim, x.dtype)  # step times, seconds
        for block in self.blocks:
            x = block(x, mask)
        x = F.normalize(self.output(self.norm(x)), dim=-1)
        return seq.replace(values=x * mask.unsqueeze(-1).to(x.dtype))


class ScavProjectors(nn.Module):
    """The trainable part of SCAV (what its ``weights`` file holds)."""

    def __init__(self, *, video_dim: int, audio_dim: int, dim: int, layers: int, heads: int):
        super().__init__()
        self.video = SequenceProjector(in_dim=video_dim, dim=dim, layers=layers, heads=heads)
        self.audio = SequenceProjector(in_dim=audio_dim, dim=dim, layers=layers, heads=heads)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(INIT_TEMPERATURE)))

    @property
    def temperature(self) -> Tensor:
        return self.log_temperature.exp().clamp(min=MIN_TEMPERATURE)


# -- component -------------------------------------------------------------------------------------


class MissingStreamError(UserError):
    """The video features lack the stream SCAV reads, or it has another width."""


class Scav(Reranker):
    """Scores candidates by minus the distance of their SCAV embedding sequence to the video's.

    ``score(candidates [b, n, c, s] at sample_rate, {video_stream: [b, t, video_dim]}) -> [b, n]``.
    """

    def __init__(self, config: ScavConfig | None = None):
        super().__init__()
        config = config or ScavConfig()
        if config.dim <= 0 or config.heads <= 0 or config.dim % config.heads:
            raise UserError(
                f"SCAV dim ({config.dim}) must be a positive multiple of heads ({config.heads})."
            )
        self.config = config
        self.audio_encoder = default_registry().build_from("audio_encoder", config.audio_encoder)
        self.audio_encoder.requires_grad_(False).eval()  # frozen feature extractor
        self.projectors = ScavProjectors(
            video_dim=config.video_dim, audio_dim=self.audio_encoder.dim, dim=config.dim,
            layers=config.layers, heads=config.heads,
        )
        self.sample_rate = self.audio_encoder.sample_rate
        self.video_streams = {config.video_stream: config.video_dim}
        self.distance_fn, self.pairwise_fn = DISTANCES[config.distance]
        if not is_random(config.weights):
            self.load_weights(config.weights)

    def train(self, mode: bool = True) -> Scav:
        super().train(mode)
        self.audio_encoder.eval()  # frozen: its dropout stays off
        return self

    # -- weights --------------------------------------------------------------------------------
    def save_weights(self, path: str | Path) -> None:
        """Write the trained projectors (and temperature) as safetensors, for ``weights``."""
        c = self.config
        metadata = {"component": "reranker:scav", "video_stream": c.video_stream,
                    "video_dim": str(c.video_dim), "dim": str(c.dim), "layers": str(c.layers),
                    "heads": str(c.heads), "distance": c.distance}
        save_state(self.projectors.state_dict(), path, metadata=metadata)

    def load_weights(self, weights: str | Path) -> None:
        """Load projectors written by :meth:`save_weights` (or a whole SCAV state dict, whose
        ``projectors.*`` entries are used and whose audio encoder entries are ignored)."""
        if str(weights).strip().lower() == PRETRAINED:
            raise WeightsError(NOT_PUBLISHED)
        path = local_file(str(weights), what="the SCAV projectors",
                          hint="Train them with `v2a train recipes/scav.yaml`.")
        state = load_checkpoint(path)
        if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
            raise WeightsError(
                f"{path} does not hold a state dict of tensors for the SCAV projectors."
            )
        prefix = "projectors."
        if any(key.startswith(prefix) for key in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        load_into(self.projectors, dict(state), path, "the SCAV projectors")

    # -- embeddings -----------------------------------------------------------------------------
    def video_sequence(self, video: Mapping[str, FeatureSequence]) -> FeatureSequence:
        """The stream SCAV reads, checked for presence and width."""
        name, dim = self.config.video_stream, self.config.video_dim
        if name not in video:
            have = ", ".join(sorted(video)) or "none"
            raise MissingStreamError(
                f"the SCAV reranker reads the visual stream {name!r}, but the video has {have}; "
                "add that visual encoder to the recipe or set the reranker's video_stream."
            )
        if video[name].dim != dim:
            raise MissingStreamError(
                f"the visual stream {name!r} is {video[name].dim} wide, but the SCAV reranker's "
                f"video_dim is {dim}; set video_dim to the stream's width."
            )
        return video[name]

    def embed_video(self, video: FeatureSequence) -> FeatureSequence:
        """``[b, t, video_dim]`` → ``[b, t, dim]`` at the same rate, unit-norm steps."""
        return self.projectors.video(video)

    def embed_audio(self, wav: Tensor) -> FeatureSequence:
        """``wav: [b, c, s]`` at ``sample_rate`` → ``[b, t_a, dim]`` at the audio encoder's rate."""
        with torch.no_grad():  # frozen encoder
            features = self.audio_encoder.encode(wav)
        return self.projectors.audio(features.replace(values=features.values.detach()))

    def distance(self, x: FeatureSequence, y: FeatureSequence) -> Tensor:
        """``[m]`` distance (the ``distance`` option) between paired rows of two embeddings."""
        return self.distance_fn(x, y)

    def pairwise_distance(self, video: FeatureSequence, audio: FeatureSequence) -> Tensor:
        """``[b_v, b_a]``: entry ``(i, j)`` is the distance of video ``i`` to audio ``j``
        (computed without expanding the ``b_v * b_a`` pairs of embedding sequences)."""
        return self.pairwise_fn(video, audio)

    # -- reranker -------------------------------------------------------------------------------
    def score(self, candidates: Tensor, video: Mapping[str, FeatureSequence]) -> Tensor:
        b, n = candidates.shape[:2]
        embedded_video = self.embed_video(self.video_sequence(video)).repeat_interleave(n)
        audio = self.embed_audio(rearrange(candidates, "b n c s -> (b n) c s"))  # one batch
        return -rearrange(self.distance(embedded_video, audio), "(b n) -> b n", b=b)

    # -- training -------------------------------------------------------------------------------
    def contrastive_loss(self, video: FeatureSequence, audio_wav: Tensor) -> Tensor:
        """Symmetric InfoNCE over the batch: row ``i`` of ``video`` matches row ``i`` of
        ``audio_wav`` (``[b, c, s]`` at ``sample_rate``), every other pairing is a negative
        (see :meth:`contrastive_terms`, which it computes on the frozen encoder's features)."""
        with torch.no_grad():  # frozen encoder
            features = self.audio_encoder.encode(audio_wav)
        return self.contrastive_terms(video, features)["loss"]

    def contrastive_terms(self, video: FeatureSequence, audio: FeatureSequence) -> dict[str, Tensor]:
        """The contrastive loss of ``video`` and the audio encoder's ``audio`` features (row
        ``i`` of each matches, every other pairing is a negative), with what training logs.

        The logits are ``-distance / temperature`` (learnable temperature), in float32; ``loss``
        is the mean of the video→audio and audio→video cross-entropies, ``accuracy`` the share
        of videos whose nearest audio is their own, ``temperature`` the current temperature.
        """
        embedded = self.projectors.audio(audio.replace(values=audio.values.detach()))
        distance = self.pairwise_distance(self.embed_video(video), embedded)
        logits = -distance.float() / self.projectors.temperature
        target = torch.arange(logits.shape[0], device=logits.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        accuracy = (logits.argmax(dim=1) == target).float().mean().detach()
        return {"loss": loss, "accuracy": accuracy,
                "temperature": self.projectors.temperature.detach()}


# -- training task ---------------------------------------------------------------------------------


class ScavTrainingTask(TrainingTask):
    """``training.task: reranker``: the recipe's SCAV reranker, its projectors trained by
    :meth:`Scav.contrastive_terms`, the video side from the batch's visual stream, the audio
    side from the batch's audio features (which must be those of the reranker's own audio
    encoder). Its audio encoder is frozen."""

    def __init__(self, recipe: Recipe):
        super().__init__()
        self.reranker = recipe.build("reranker")
        if not isinstance(self.reranker, Scav):
            plugin = recipe.choice("reranker").plugin
            raise TrainingError(
                f"the reranker {plugin!r} cannot be trained by `v2a train` (it has no contrastive "
                "loss); training.task=reranker trains SCAV"
            )
        check_reranker_features(recipe)
        self.frozen = [self.reranker.audio_encoder]

    def check_batch(self, batch: Batch) -> None:
        if batch.audio_features is None:
            raise TrainingError("the data hold no audio features; the reranker task trains on the "
                                "features of the recipe's audio_encoder")
        self.reranker.video_sequence(batch.streams)  # present, of the right width

    def forward(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        video = self.reranker.video_sequence(batch.streams)
        return self.reranker.contrastive_terms(video, batch.audio_features)

    def exports(self) -> dict[str, nn.Module]:
        return {"reranker": self.reranker}  # written by Scav.save_weights


def check_reranker_features(recipe: Recipe) -> None:
    """The data hold the features of the recipe's ``audio_encoder`` (or, without one, of the
    reranker's own, see :func:`v2a.features.extraction_slots`): SCAV must read those."""
    own = recipe.choice("reranker").nested.get("audio_encoder")
    if own is None or not recipe.has("audio_encoder"):
        return
    if recipe.choice("audio_encoder").as_data() != own.as_data():
        raise RecipeError(
            f"{recipe.source}: audio_encoder (whose features the data hold) differs from "
            "reranker.audio_encoder; make them the same component (or drop the top-level one) "
            "to train the reranker"
        )

"""KL divergence and Inception Score on audio classifiers' class probabilities, as av-benchmark
(Cheng et al., MMAudio, CVPR 2025; github.com/hkchengrex/av-benchmark) reports them for PANNs
and PaSST.

av-benchmark computes both from the classifiers' *logits* through a **softmax over the
classes**, although PANNs and PaSST are multi-label (sigmoid) taggers: its evaluation reports
``KL-PANNS-softmax``, ``KL-PASST-softmax``, ``ISC-PANNS`` and ``ISC-PASST`` this way (the
formulas come from audioldm_eval, on which it says it is based, and torch-fidelity's Inception
Score). An :class:`~v2a.interfaces.AudioClassifier` hands out probabilities instead, so
:func:`class_distribution` recovers the same softmax:

* ``multi_label``: the rows are independent sigmoid probabilities ``p = σ(z)``; the softmax of
  the logits ``z = log p − log(1 − p)`` is the odds ``p / (1 − p)`` normalised over the classes.
  ``p`` is clipped to ``[ε, 1 − ε]`` (ε = float64 machine epsilon) first, so a probability that
  rounded to exactly 0 or 1 counts as a logit of about ∓36. For av-benchmark's numbers, a
  classifier should compute its sigmoid in float64 (float32 saturates above a logit of ~17).
* not ``multi_label``: the rows already are softmax distributions (renormalised to sum 1).

Definitions, with ``P`` the reference's and ``Q`` the generated audio's distributions, one row
per clip, paired by row:

* **KL** (:func:`kl_divergence`): ``KL(P ‖ Q)`` per clip, ``Σ_c P_c (log P_c − log(Q_c + eps))``
  with ``0 · log 0 = 0`` and ``eps`` = :data:`EPS` (audioldm_eval's, added to the generated
  probabilities before the log), averaged over clips; nats, ≥ 0 up to ``eps`` (identical rows
  give a value in ``[−classes · eps, 0]``), lower is closer.
* **IS** (:func:`inception_score`): the rows split into ``splits`` contiguous chunks (optionally
  shuffled first); per chunk ``exp(mean over its rows of KL(P_row ‖ mean row of the chunk))``;
  the mean over chunks. Unitless, from 1 (every clip predicted alike) to the number of classes
  (each clip certain of its own class, classes used evenly); higher is more diverse and more
  confident. av-benchmark uses 10 splits shuffled with seed 2020
  (``inception_score(..., splits=10, shuffle_seed=2020)``) and also reports the standard
  deviation over the splits (:func:`inception_scores`).
"""

from __future__ import annotations

import numpy as np

from v2a.errors import UserError

EPS = 1e-6  # audioldm_eval / av-benchmark: added to the generated probabilities in the KL's log


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x · log y`` with 0 where ``x`` is 0."""
    safe = np.where(x > 0, y, 1.0)
    return np.where(x > 0, x * np.log(safe), 0.0)


def class_distribution(probabilities: np.ndarray, *, multi_label: bool) -> np.ndarray:
    """``[n, c]`` float64 rows that sum to 1: the softmax over the classes of the classifier's
    logits, recovered from its probabilities ``[n, c]`` (see the module docstring)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"class probabilities must be [clips, classes], got shape {p.shape}")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("class probabilities must lie in [0, 1]")
    if multi_label:
        tiny = np.finfo(np.float64).eps
        p = np.clip(p, tiny, 1.0 - tiny)
        logits = np.log(p) - np.log1p(-p)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    totals = p.sum(axis=1, keepdims=True)
    if not np.all(totals > 0):
        raise ValueError("a single-label classifier returned a row of zeros")
    return p / totals


def kl_divergence(reference: np.ndarray, generated: np.ndarray, *, multi_label: bool,
                  eps: float = EPS) -> float:
    """Mean over paired clips of ``KL(reference ‖ generated)`` of their class distributions
    (``[n, c]`` each, row ``i`` of both from the same clip), nats; see the module docstring."""
    p = class_distribution(reference, multi_label=multi_label)
    q = class_distribution(generated, multi_label=multi_label)
    if p.shape != q.shape:
        raise ValueError(f"paired class probabilities differ in shape: {p.shape} vs {q.shape}")
    per_clip = (_xlogy(p, p) - p * np.log(q + eps)).sum(axis=1)
    return float(per_clip.mean())


def inception_scores(probabilities: np.ndarray, *, multi_label: bool, splits: int = 1,
                     shuffle_seed: int | None = None) -> np.ndarray:
    """The Inception Score of each of ``splits`` contiguous chunks of the clips ``[n, c]``
    (chunk ``i`` = rows ``i·n//splits`` to ``(i+1)·n//splits``), after permuting the rows with
    ``numpy.random.RandomState(shuffle_seed).permutation(n)`` when a seed is given (the
    permutation torch-fidelity and av-benchmark draw)."""
    p = class_distribution(probabilities, multi_label=multi_label)
    n = len(p)
    if not 1 <= splits <= n:
        raise UserError(f"The Inception Score needs at least one clip per split: got {n} clips "
                        f"for {splits} splits; evaluate more clips or use fewer splits.")
    if shuffle_seed is not None:
        p = p[np.random.RandomState(shuffle_seed).permutation(n)]
    scores = []
    for i in range(splits):
        chunk = p[i * n // splits:(i + 1) * n // splits]
        marginal = chunk.mean(axis=0, keepdims=True)
        divergence = (_xlogy(chunk, chunk) - _xlogy(chunk, np.broadcast_to(marginal, chunk.shape)))
        scores.append(np.exp(divergence.sum(axis=1).mean()))
    return np.array(scores)


def inception_score(probabilities: np.ndarray, *, multi_label: bool, splits: int = 1,
                    shuffle_seed: int | None = None) -> float:
    """IS of the clips' class probabilities ``[n, c]``: the mean of :func:`inception_scores`."""
    return float(inception_scores(probabilities, multi_label=multi_label, splits=splits,
                                  shuffle_seed=shuffle_seed).mean())

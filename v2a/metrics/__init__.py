"""Metrics: pure numpy functions of audio, frames and event times, shared by ``v2a evaluate``
and ``v2a synth`` (and the metrics to come).

* :mod:`v2a.metrics.frechet` — Fréchet distance between two sets of feature frames, and the
  running statistics (:class:`~v2a.metrics.frechet.Moments`) it is computed from;
* :mod:`v2a.metrics.spectral` — Hann-windowed frames, log-power spectrograms, the orthonormal
  DCT-II and MFCCs;
* :mod:`v2a.metrics.onsets` — spectral-flux onset detection, one-to-one onset matching, onset F1,
  onset offset, the class of a sound by its dominant frequency, and per-set summaries; onset
  accuracy and onset AP of generated against reference audio (CondFoley's, as MMAudio reports);
* :mod:`v2a.metrics.novelty` — novelty curves and NS, their correlation (MaskVAT's);
* :mod:`v2a.metrics.classes` — KL divergence and Inception Score on class probabilities
  (av-benchmark's, for PANNs and PaSST);
* :mod:`v2a.metrics.desync` — DeSync's offsets, segments and mean absolute offset
  (Synchformer, as av-benchmark scores it).

Nothing here reads files, builds components or knows a recipe: inputs are arrays (a waveform
``[n]`` or ``[c, n]`` with its sample rate, frames ``[t, d]``, times in seconds), outputs are
numbers. Each module's docstring states its metrics' definitions and units.
"""

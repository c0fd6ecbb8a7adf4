"""Generation: ``v2a generate --recipe R [--checkpoint RUN] VIDEO [VIDEO ...]`` and its Python API.

Two lines from a video to its sound::

    model = VideoToAudio.from_recipe(load_recipe("tiny"))        # + checkpoint="runs/NAME"
    audio, sample_rate = model.generate("clip.mp4", seed=0)      # [c, n] at the codec's rate

The video may also be frames in memory: ``model.generate(frames, fps=25.0)`` with ``frames`` a
uint8 tensor ``[t, h, w, 3]`` (RGB bytes, as video readers return them) or a float tensor
``[t, 3, h, w]`` in [0, 1] (v2a's own layout), frame ``i`` shown from ``i / fps`` s; or a
:class:`v2a.media.Video` (what :func:`v2a.media.load_video` returns; its times are counted from
its first frame).

What :meth:`VideoToAudio.generate` does, for one video:

1. sample the video once per visual encoder, at the encoder's ``fps`` and ``frame_size``: a file
   is decoded with :func:`v2a.media.load_video`, frames in memory go through
   :func:`v2a.media.resample_video` (the same frame-on-screen rule and the same scaler);
2. encode each stream; the fuser turns them into the conditioning of
   ``num_frames = codec.num_frames(round(duration · sample_rate))`` codec frames;
3. sample ``candidates`` code sequences (:func:`v2a.sampler.sample`);
4. when ``candidates > 1`` and the recipe has a reranker, decode every candidate (in batches of
   a measured size, :class:`~v2a.generate.candidates.CandidateDecoder`), resample it to the
   reranker's rate and keep the one it prefers (else the first);
5. decode the codes with the codec, window by window (:func:`decode_in_windows`: memory does
   not grow with the video), to exactly ``round(duration · sr)`` samples, so the sound lasts as
   long as the video (or the stretch ``start`` .. ``start + duration`` asked for); a clip of one
   window whose chosen candidate was decoded in a call of its own for the reranker keeps that
   waveform instead (it is the same decode: :meth:`VideoToAudio.kept_candidate_wav`).

``VideoToAudio.generate`` returns the model's raw output; ``v2a generate`` then applies the
output stage (:mod:`v2a.output_stage`: peak limiter, optional loudness) and writes the audio
file and the mp4 as one commit (:func:`write_outputs`), after checking every input and output
before any model is loaded (:func:`plan_jobs`, :class:`Outputs`; see docs/reliability.md).

The frozen components (codec, visual encoders, reranker) are built as the feature cache builds
them (:func:`v2a.recipe.build_frozen`, fixed seed), so random-init encoders match the ones a
training run saw. The fuser and generator come from a training run folder (``fuser.safetensors``
and ``generator.safetensors``, loaded strictly; :mod:`v2a.generate.run_folder`) or, without one,
from their ``weights`` options (a bundled model such as ``recipes/tiny.yaml`` names its files
there); with neither they are randomly initialised (for plumbing only: the sound means nothing),
with a warning. The run's ``recipe.yaml`` must agree with the recipe on what the weights mean
(:data:`~v2a.generate.run_folder.WEIGHT_SECTIONS`: codec, visual encoders, fuser, generator;
``weights`` files by place or content; the fuser's and generator's own ``weights``, which the run
replaces, left out), else the run is refused in one sentence naming the keys that differ; a run
without ``recipe.yaml`` is used with a warning.

Videos longer than the recipe's window (``data.clip_seconds``): windows of the window's length
(in codec frames), consecutive ones overlapping by a quarter of it, the last one ending at the
video's end. Each window is conditioned on its own stretch of video; the codes already generated
in its overlap are given to it as a prompt (known positions, never changed), so the sampler
continues them rather than starting afresh; when ``candidates > 1`` the reranker picks the best
candidate of each window, which the next window continues. The windows' codes are stitched by
frame and decoded in windows with a second of context on either side, crossfaded where they
meet. Window 0 samples with ``seed``, window ``w`` with a seed derived from ``(seed, w)``.

The package, by job:

* :mod:`v2a.generate.model`: :class:`VideoToAudio` (building the model, generating);
* :mod:`v2a.generate.video`: the video read (:func:`video_source`) and the stretch asked for;
* :mod:`v2a.generate.run_folder`: a training run's weights and the check of its recipe
  (:func:`check_run_recipe`, :func:`same_weights`);
* :mod:`v2a.generate.windows`: windows of a long video and windowed decoding
  (:func:`decode_in_windows`);
* :mod:`v2a.generate.candidates`: decoding a window's candidates for the reranker;
* :mod:`v2a.generate.stages`: stage timing, off unless a :class:`StageRecorder` records
  (``benchmarks/bench_pipeline.py``);
* :mod:`v2a.generate.editing`: keeping audio and regenerating stretches of it, or continuing
  an audio prompt (:class:`~v2a.generate.editing.AudioEdit`; docs/editing.md);
* :mod:`v2a.generate.inputs`, :mod:`v2a.generate.jobs`, :mod:`v2a.generate.outputs`: the batch
  side of ``v2a generate`` (what it is given, what it plans to write, how it writes it);
* :mod:`v2a.generate.errors`: :class:`GenerationError`.
"""

from __future__ import annotations

from v2a.generate.errors import GenerationError
from v2a.generate.inputs import Source, expand_inputs, is_v2a_output
from v2a.generate.jobs import (
    Job,
    check_writable,
    codec_format,
    estimated_bytes,
    existing_outputs,
    names_a_file,
    output_audio_format,
    output_paths,
    plan_jobs,
)
from v2a.generate.model import VideoToAudio
from v2a.generate.outputs import Outputs, write_outputs
from v2a.generate.run_folder import WEIGHT_SECTIONS, check_run_recipe, same_weights
from v2a.generate.stages import StageRecorder, stage
from v2a.generate.video import video_source
from v2a.generate.windows import (
    WINDOW_TOLERANCE,
    decode_in_windows,
    window_seed,
    window_starts,
)

__all__ = [
    "WEIGHT_SECTIONS", "WINDOW_TOLERANCE", "GenerationError", "Job", "Outputs", "Source",
    "StageRecorder", "VideoToAudio", "check_run_recipe", "check_writable", "codec_format", "decode_in_windows",
    "estimated_bytes", "existing_outputs", "expand_inputs", "is_v2a_output",
    "names_a_file", "output_audio_format", "output_paths", "plan_jobs", "same_weights", "stage",
    "video_source", "window_seed", "window_starts", "write_outputs",
]

"""The conformance checks: one function per contract of :mod:`v2a.interfaces`.

Each check is ``check_<what>(factory) -> None``. It builds what it needs from ``factory`` (a
zero-argument callable returning a fresh component), runs the component on small seeded inputs
in ``eval()`` mode under :func:`torch.inference_mode`, and raises :class:`ConformanceError` with
one sentence naming the broken contract and the observed values.

Sections: errors and helpers, probes (how the common checks run each kind), common checks,
then the checks of each kind, and the tables :data:`COMMON_CHECKS` / :data:`CHECKS`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from v2a.interfaces import KINDS, Component
from v2a.sequences import Conditioning, FeatureSequence
from v2a.testing import inputs

Factory = Callable[[], Component]
Check = Callable[[Factory], None]

#: Relative tolerance of "identical" outputs (determinism, state round trip): bitwise on a
#: CPU, a hair of slack for GPU kernels that accumulate in a nondeterministic order.
SAME = 1e-6
#: Relative tolerance of outputs computed along different paths (one row vs. a batch, ...).
CLOSE = 1e-4
#: Fraction of integer outputs (codes) allowed to differ between a batch and a single row: a
#: float rounding difference may legitimately flip a quantiser decision that sits on a boundary.
CODE_FLIPS = 0.01
#: Magnitude of the values put into padded steps to see whether they are read.
HUGE = 1e4


class ConformanceError(AssertionError):
    """A component breaks a contract of its interface; the message says which, and how."""


# -- helpers ------------------------------------------------------------------------------------


def factory_id(factory: Any) -> str:
    """How a factory is named in test ids and messages: its ``__name__`` (``kind:name`` for
    :func:`v2a.testing.from_registry`)."""
    if isinstance(factory, functools.partial):
        return factory_id(factory.func)
    return getattr(factory, "__name__", None) or type(factory).__name__


def kind_of(component: Any) -> str | None:
    """The kind (a key of :data:`v2a.interfaces.KINDS`) whose interface ``component`` implements."""
    for kind, interface in KINDS.items():
        if isinstance(component, interface):
            return kind
    return None


def build(factory: Factory, *, seed: int = 0) -> Component:
    """A fresh component from ``factory``, in ``eval()`` mode.

    Its random initialisation is seeded with ``seed`` inside :func:`torch.random.fork_rng`, so
    checks are reproducible and the caller's global random state is left alone.
    """
    with torch.random.fork_rng(devices=[]), _reported(f"the factory {factory_id(factory)}"):
        torch.manual_seed(seed)
        component = factory()
    if not isinstance(component, Component):
        raise ConformanceError(
            f"the factory {factory_id(factory)} returned a {type(component).__name__}, which is "
            "not a v2a.interfaces.Component"
        )
    return component.eval()


def _name(component: Component) -> str:
    return type(component).__name__


@contextlib.contextmanager
def _reported(what: str):
    """Turn an exception raised inside into a ConformanceError saying that ``what`` raised it
    (chained, so the component's own traceback is kept)."""
    try:
        yield
    except ConformanceError:
        raise
    except Exception as exc:
        raise ConformanceError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def _call(what: str, fn: Callable, *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` under inference mode, its exceptions reported as ``what``'s."""
    with _reported(what), torch.inference_mode():
        return fn(*args, **kwargs)


def _tensor(obj: Any, what: str) -> Tensor:
    if not isinstance(obj, Tensor):
        raise ConformanceError(f"{what} returned a {type(obj).__name__}, not a torch.Tensor")
    return obj


def _sequence(obj: Any, what: str) -> FeatureSequence:
    if not isinstance(obj, FeatureSequence):
        raise ConformanceError(f"{what} returned a {type(obj).__name__}, not a FeatureSequence")
    return obj


def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


def _all_finite(t: Tensor, mask: Tensor | None = None) -> bool:
    if mask is not None:
        t = t[mask]
    return bool(torch.isfinite(t).all())


def _outputs(key: str, sequence: FeatureSequence) -> dict[str, Tensor]:
    """A sequence as named output tensors: ``key`` (values) and ``key.mask`` if it has one."""
    out = {key: sequence.values}
    if sequence.mask is not None:
        out[f"{key}.mask"] = sequence.mask
    return out


def _difference(
    expected: Mapping[str, Tensor], actual: Mapping[str, Tensor], *, tol: float,
    code_flips: float = 0.0,
) -> str | None:
    """How ``actual`` differs from ``expected`` (first differing output), or ``None``.

    Float outputs are compared with ``rtol = tol`` and ``atol = tol * max|expected|``; integer
    outputs exactly, up to a fraction ``code_flips`` of entries; masks exactly. Values at steps
    a ``<key>.mask`` output marks as padding are not compared.
    """
    for key, e in expected.items():
        a = actual.get(key)
        if a is None:
            return f"{key} is missing"
        if a.shape != e.shape:
            return f"{key} has shape {_shape(a)} instead of {_shape(e)}"
        if a.dtype != e.dtype:
            return f"{key} has dtype {a.dtype} instead of {e.dtype}"
        a, e = a.detach().cpu(), e.detach().cpu()
        mask = expected.get(f"{key}.mask")
        if mask is not None and not key.endswith(".mask"):
            a, e = a[mask.cpu()], e[mask.cpu()]
        if e.dtype == torch.bool:
            wrong = int((a != e).sum())
            if wrong:
                return f"{key} differs at {wrong} of {e.numel()} steps"
        elif not e.is_floating_point():
            wrong = int((a != e).sum())
            if wrong > code_flips * e.numel():
                return f"{key} differs at {wrong} of {e.numel()} entries"
        else:
            e, a = e.double(), a.double()
            finite = e[torch.isfinite(e)]
            scale = float(finite.abs().max()) if finite.numel() else 1.0
            atol = tol * max(scale, 1e-6)
            close = torch.isclose(a, e, rtol=tol, atol=atol, equal_nan=True)
            if not bool(close.all()):
                gap = float((a - e).abs().nan_to_num(nan=math.inf)[~close].max())
                return (
                    f"{key} differs by up to {gap:.3g} (tolerance {atol:.3g}) at "
                    f"{int((~close).sum())} of {e.numel()} entries"
                )
    return None


# -- probes: how the common checks run each kind --------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """How the common checks exercise one kind of component.

    ``example(component, batch, gen)`` makes the keyword inputs of a representative call;
    ``run(component, example, when)`` calls the component and returns every output tensor by
    name (``when`` is appended to the name of a method in error messages). ``shared`` names the
    inputs that are not batched (so not split by rows).
    """

    example: Callable[[Any, int, torch.Generator], dict[str, Any]]
    run: Callable[[Any, dict[str, Any], str], dict[str, Tensor]]
    shared: tuple[str, ...] = ()


def _codec_example(codec, batch, gen):
    n = round(0.5 * codec.sample_rate)
    l = codec.num_frames(n)
    return {
        "wav": inputs.waveform(batch, codec.channels, n, codec.sample_rate, gen),
        "codes": inputs.codes(batch, codec.n_codebooks, l, codec.codebook_size, gen),
    }


def _codec_run(codec, ex, when=""):
    name = _name(codec)
    encoded = _tensor(_call(f"{name}.encode{when}", codec.encode, ex["wav"]), f"{name}.encode")
    decoded = _tensor(_call(f"{name}.decode{when}", codec.decode, ex["codes"]), f"{name}.decode")
    latents = _call(f"{name}.latents{when}", codec.latents, ex["codes"])
    latents = _sequence(latents, f"{name}.latents")
    return {"encode": encoded, "decode": decoded, **_outputs("latents", latents)}


def _visual_example(encoder, batch, gen):
    t = 16
    size = tuple(encoder.frame_size) if encoder.frame_size is not None else (32, 32)
    return {
        "frames": inputs.frames(batch, t, size, gen),
        "times": torch.arange(t, dtype=torch.float32) / encoder.fps,
    }


def _visual_run(encoder, ex, when=""):
    what = f"{_name(encoder)}.encode"
    out = _call(what + when, encoder.encode, ex["frames"], ex["times"])
    return _outputs("encode", _sequence(out, what))


def _audio_example(encoder, batch, gen):
    n = encoder.sample_rate // 2
    return {"wav": inputs.waveform(batch, 1, n, encoder.sample_rate, gen)}


def _audio_run(encoder, ex, when=""):
    what = f"{_name(encoder)}.encode"
    return _outputs("encode", _sequence(_call(what + when, encoder.encode, ex["wav"]), what))


def _fuser_example(fuser, batch, gen, *, pad_all=False):
    padded = (lambda i: True) if pad_all else (lambda i: i == 0)
    return {
        "streams": inputs.streams(fuser.stream_dims, batch, gen, padded=padded),
        "frame_rate": 50.0,
        "num_frames": 100,
    }


def _fuse(fuser, ex, when=""):
    what = f"{_name(fuser)}.fuse"
    out = _call(
        what + when, fuser.fuse, ex["streams"],
        frame_rate=ex["frame_rate"], num_frames=ex["num_frames"],
    )
    if not isinstance(out, Conditioning):
        raise ConformanceError(f"{what} returned a {type(out).__name__}, not a Conditioning")
    for part in ("aligned", "context"):
        if getattr(out, part) is not None:
            _sequence(getattr(out, part), f"{what} (Conditioning.{part})")
    return out


def _fuser_run(fuser, ex, when=""):
    out = _fuse(fuser, ex, when)
    found = {}
    for part in ("aligned", "context"):
        if getattr(out, part) is not None:
            found.update(_outputs(part, getattr(out, part)))
    return found


def _condition(generator, batch, length, gen) -> Conditioning:
    """Conditioning for ``generator``: what it uses, ``aligned`` with ``length`` steps at 50 Hz
    and a ``context`` of 7 steps at 8 Hz with a padding mask."""
    dim = generator.condition_dim
    aligned = context = None
    if generator.uses_aligned:
        aligned = inputs.features(batch, length, dim, 50.0, gen)
    if generator.uses_context:
        context = inputs.features(batch, 7, dim, 8.0, gen, padded=True)
    return Conditioning(aligned=aligned, context=context)


def _generator_example(generator, batch, gen):
    l = 12
    codes = inputs.codes(batch, generator.n_codebooks, l, generator.codebook_size, gen)
    return {
        "codes": codes,
        "mask": torch.rand(codes.shape, generator=gen) < 0.5,
        "condition": _condition(generator, batch, l, gen),
    }


def _generator_call(generator, ex, when="", **changes):
    ex = {**ex, **changes}
    what = f"{_name(generator)}.forward"
    drop = ex.get("drop")
    logits = _call(what + when, generator, ex["codes"], ex["mask"], ex["condition"], drop=drop)
    return _tensor(logits, what)


def _generator_run(generator, ex, when=""):
    return {"logits": _generator_call(generator, ex, when)}


def _reranker_example(reranker, batch, gen, n=3):
    s = reranker.sample_rate // 2
    wav = inputs.waveform(batch * n, 1, s, reranker.sample_rate, gen).reshape(batch, n, 1, s)
    loudness = 0.2 + 0.8 * torch.rand(batch, n, 1, 1, generator=gen)
    video = {
        name: inputs.features(batch, 8, dim, 8.0, gen)
        for name, dim in reranker.video_streams.items()
    }
    return {"candidates": wav * loudness, "video": video}


def _reranker_score(reranker, ex, when=""):
    what = f"{_name(reranker)}.score"
    return _tensor(_call(what + when, reranker.score, ex["candidates"], ex["video"]), what)


def _reranker_run(reranker, ex, when=""):
    return {"scores": _reranker_score(reranker, ex, when)}


PROBES: dict[str, Probe] = {
    "codec": Probe(_codec_example, _codec_run),
    "visual_encoder": Probe(_visual_example, _visual_run, shared=("times",)),
    "audio_encoder": Probe(_audio_example, _audio_run),
    "fuser": Probe(_fuser_example, _fuser_run, shared=("frame_rate", "num_frames")),
    "generator": Probe(_generator_example, _generator_run),
    "reranker": Probe(_reranker_example, _reranker_run),
}


def _probe(component: Component) -> Probe:
    kind = kind_of(component)
    if kind is None:
        raise ConformanceError(f"{_name(component)} implements none of the v2a interfaces")
    return PROBES[kind]


# -- common checks --------------------------------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0


def _is_rate(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _is_bool(v) -> bool:
    return isinstance(v, bool)


def _is_frame_size(v) -> bool:
    if v is None:
        return True
    return isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(x) for x in v)


def _is_widths(v) -> bool:
    return isinstance(v, Mapping) and all(isinstance(k, str) and _is_int(d) for k, d in v.items())


INT = ("a positive int", _is_int)
RATE = ("a positive finite number", _is_rate)
BOOL = ("a bool", _is_bool)
FRAME_SIZE = ("None or a pair (h, w) of positive ints", _is_frame_size)
WIDTHS = ("a mapping of str names to positive int widths", _is_widths)

#: The documented attributes of each interface: name -> (what the contract says, validator).
ATTRIBUTES: dict[str, dict[str, tuple[str, Callable[[Any], bool]]]] = {
    "codec": {"sample_rate": INT, "channels": INT, "frame_rate": RATE, "n_codebooks": INT,
              "codebook_size": INT, "latent_dim": INT},
    "visual_encoder": {"fps": RATE, "frame_size": FRAME_SIZE, "dim": INT, "rate": RATE},
    "audio_encoder": {"sample_rate": INT, "dim": INT, "rate": RATE},
    "fuser": {"dim": INT, "provides_aligned": BOOL, "provides_context": BOOL,
              "stream_dims": WIDTHS},
    "generator": {"n_codebooks": INT, "codebook_size": INT, "condition_dim": INT, "hidden_dim": INT,
                  "uses_aligned": BOOL, "uses_context": BOOL},
    "reranker": {"sample_rate": INT, "video_streams": WIDTHS},
}


def check_interface(factory: Factory) -> None:
    """The factory builds an instance of one of the six interfaces whose documented attributes
    are all set to sane values (positive ints, positive finite rates, real bools, ``str -> int``
    mappings); a fuser provides, and a generator uses, at least one kind of conditioning."""
    component = build(factory)
    name, kind = _name(component), kind_of(component)
    if kind is None:
        interfaces = ", ".join(cls.__name__ for cls in KINDS.values())
        raise ConformanceError(f"{name} implements none of the v2a interfaces ({interfaces})")
    interface = KINDS[kind].__name__
    if component.kind != kind:
        raise ConformanceError(
            f"{name}.kind is {component.kind!r}, but it implements {interface} ({kind!r})"
        )
    for attr, (contract, valid) in ATTRIBUTES[kind].items():
        if not hasattr(component, attr):
            raise ConformanceError(
                f"{name} has no attribute {attr!r}; the {interface} contract is {contract}"
            )
        value = getattr(component, attr)
        if not valid(value):
            raise ConformanceError(
                f"{name}.{attr} is {value!r}; the {interface} contract is {contract}"
            )
    if kind == "fuser":
        if not (component.provides_aligned or component.provides_context):
            raise ConformanceError(
                f"{name} sets both provides_aligned and provides_context to False; a "
                "ConditionFuser provides at least one"
            )
        if not component.stream_dims:
            raise ConformanceError(
                f"{name}.stream_dims is empty; a ConditionFuser consumes at least one stream"
            )
    if kind == "generator" and not (component.uses_aligned or component.uses_context):
        raise ConformanceError(
            f"{name} sets both uses_aligned and uses_context to False; a MaskedGenerator uses at "
            "least one"
        )


#: Relative tolerance of a declared rate against the built one: both are float64 quotients
#: of the same integers (``44100 / 512``), possibly taken in another order or through an
#: intermediate quotient, each step within half an ulp (1.1e-16); 1e-9 is far above that and
#: far below any real disagreement (a wrong hop changes a rate by a percent or more).
DECLARED_RTOL = 1e-9


def _same_property(declared: Any, actual: Any) -> bool:
    """Whether a declared attribute value equals the built one: bools and ints exactly (a bool
    is no int here), other numbers within :data:`DECLARED_RTOL`, mappings and sequences item
    by item."""
    if isinstance(declared, bool) or isinstance(actual, bool):
        return declared is actual
    if isinstance(declared, numbers.Integral) and isinstance(actual, numbers.Integral):
        return declared == actual
    if isinstance(declared, numbers.Real) and isinstance(actual, numbers.Real):
        return math.isclose(declared, actual, rel_tol=DECLARED_RTOL, abs_tol=0.0)
    if isinstance(declared, Mapping) and isinstance(actual, Mapping):
        return declared.keys() == actual.keys() and all(
            _same_property(value, actual[key]) for key, value in declared.items()
        )
    if isinstance(declared, (tuple, list)) and isinstance(actual, (tuple, list)):
        return len(declared) == len(actual) and all(map(_same_property, declared, actual))
    return declared == actual


def check_declared_properties(factory: Factory) -> None:
    """What the plug-in declares its component will be (``ComponentSpec.properties``, computed
    from the config alone, which recipes are checked with) is what the built component is:
    every declared attribute is one of the interface's and equals the built one (bools, ints
    and widths exactly, rates within 1e-9 relative).

    The declaration comes from the factory's ``declared_properties()`` method, which
    :func:`v2a.testing.from_registry` factories have. Passes when there is none: a factory
    that is a plain function or class, or a plug-in that declares nothing.
    """
    declare = getattr(factory, "declared_properties", None)
    if declare is None:
        return
    with _reported(f"the declared properties of {factory_id(factory)}"):
        declared = dict(declare() or {})
    if not declared:
        return
    component = build(factory)
    name, kind = _name(component), kind_of(component)
    if kind is None:
        raise ConformanceError(f"{name} implements none of the v2a interfaces")
    interface = KINDS[kind].__name__
    for attr, value in declared.items():
        if attr not in ATTRIBUTES[kind]:
            raise ConformanceError(
                f"{factory_id(factory)} declares the property {attr!r}, which is not an attribute "
                f"of the {interface} interface ({', '.join(ATTRIBUTES[kind])})"
            )
        actual = getattr(component, attr, None)
        if not _same_property(value, actual):
            raise ConformanceError(
                f"{factory_id(factory)} declares {attr} = {value!r}, but the built {name} has "
                f"{attr} = {actual!r}"
            )


def check_state_round_trip(factory: Factory) -> None:
    """``state_dict()`` is the whole state: saved with safetensors and loaded with
    ``load_state_dict(strict=True)`` into a second, differently seeded instance, it reproduces
    the first instance's outputs (so no state hides outside parameters and persistent buffers,
    and all of it is tensors)."""
    from safetensors.torch import load_file, save_file

    source, target = build(factory, seed=0), build(factory, seed=1)
    name = _name(source)
    tensors = {}
    for key, value in source.state_dict().items():
        if not isinstance(value, Tensor):
            raise ConformanceError(
                f"{name}.state_dict() entry {key!r} is a {type(value).__name__}, not a tensor, so "
                "safetensors cannot store it"
            )
        tensors[key] = value.detach().cpu().clone().contiguous()  # clone: untie shared storage
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "state.safetensors")
        with _reported(f"safetensors.torch.save_file of {name}.state_dict()"):
            save_file(tensors, path)
        loaded = load_file(path)
    with _reported(f"{name}.load_state_dict(strict=True) of its own saved state_dict"):
        target.load_state_dict(loaded, strict=True)
    probe = _probe(source)
    example = probe.example(source, 2, inputs.seeded())
    diff = _difference(probe.run(source, example), probe.run(target, example), tol=SAME)
    if diff:
        raise ConformanceError(
            f"a second {name} that loaded the first one's state_dict (through safetensors) gives "
            f"different outputs on the same input ({diff}): some state is not a registered "
            "parameter or persistent buffer"
        )


def check_dtype_move(factory: Factory) -> None:
    """After ``.to(torch.float64)`` the component runs on float64 inputs and every float output
    is float64, integer outputs (codes) keeping their dtype: no tensor hides from ``.to()``."""
    component = build(factory)
    name, probe = _name(component), _probe(component)
    example = probe.example(component, 2, inputs.seeded())
    before = probe.run(component, example)
    with _reported(f"{name}.to(torch.float64)"):
        component.to(torch.float64)
    when = " after .to(torch.float64)"
    after = probe.run(component, inputs.to_dtype(example, torch.float64), when)
    for key, b in before.items():
        expected = torch.float64 if b.is_floating_point() else b.dtype
        a = after.get(key)
        if a is not None and a.dtype != expected:
            raise ConformanceError(
                f"after .to(torch.float64) the {key} output of {name} is {a.dtype}, not "
                f"{expected}; a tensor kept as a plain attribute or a hard-coded dtype does not "
                "follow .to()"
            )


def check_device_move(factory: Factory) -> None:
    """After ``.to("cuda")`` the component runs on CUDA inputs and returns CUDA outputs.

    Passes silently when CUDA is not available.
    """
    if not torch.cuda.is_available():
        return
    component = build(factory)
    name, probe = _name(component), _probe(component)
    example = probe.example(component, 2, inputs.seeded())
    with _reported(f"{name}.to('cuda')"):
        component.to("cuda")
    outputs = probe.run(component, inputs.to_device(example, "cuda"), " after .to('cuda')")
    for key, value in outputs.items():
        if value.device.type != "cuda":
            raise ConformanceError(
                f"after .to('cuda') the {key} output of {name} is on {value.device}; a tensor kept "
                "as a plain attribute or a hard-coded device does not follow .to()"
            )


def check_deterministic(factory: Factory) -> None:
    """In ``eval()`` mode two calls on the same input give identical outputs."""
    component = build(factory)
    probe = _probe(component)
    example = probe.example(component, 2, inputs.seeded())
    first, second = probe.run(component, example), probe.run(component, example)
    diff = _difference(first, second, tol=SAME)
    if diff:
        raise ConformanceError(
            f"{_name(component)} is not deterministic in eval mode: a second call on the same "
            f"input gives different outputs ({diff})"
        )


def check_batch_independence(factory: Factory) -> None:
    """Every output row depends only on its own input row: each row of a batch of 3 gives the
    same outputs alone as in the batch (for a reranker, a row is a video and its candidates)."""
    component = build(factory)
    probe = _probe(component)
    batch = 3
    example = probe.example(component, batch, inputs.seeded())
    full = probe.run(component, example)
    for i in range(batch):
        rows = slice(i, i + 1)
        alone = {
            k: v if k in probe.shared else inputs.batch_rows(v, rows) for k, v in example.items()
        }
        diff = _difference(
            inputs.batch_rows(full, rows), probe.run(component, alone),
            tol=CLOSE, code_flips=CODE_FLIPS,
        )
        if diff:
            raise ConformanceError(
                f"{_name(component)} is not batch independent: row {i} of a batch of {batch} gives "
                f"different outputs than the same row alone ({diff})"
            )


# -- AudioCodec -----------------------------------------------------------------------------------


def check_codec_encode(factory: Factory) -> None:
    """``encode`` maps ``[b, channels, n]`` waveforms to int64 codes ``[b, n_codebooks, l]`` with
    every value in ``[0, codebook_size)``."""
    codec = build(factory)
    name = _name(codec)
    b, n = 2, round(0.5 * codec.sample_rate)
    wav = inputs.waveform(b, codec.channels, n, codec.sample_rate, inputs.seeded())
    codes = _tensor(_call(f"{name}.encode", codec.encode, wav), f"{name}.encode")
    if codes.dtype != torch.int64:
        raise ConformanceError(
            f"{name}.encode returned codes of dtype {codes.dtype}; the AudioCodec contract is int64"
        )
    if codes.dim() != 3 or list(codes.shape[:2]) != [b, codec.n_codebooks]:
        raise ConformanceError(
            f"{name}.encode returned codes of shape {_shape(codes)} for a {_shape(wav)} waveform; "
            f"the AudioCodec contract is [b, n_codebooks, l] = [{b}, {codec.n_codebooks}, l]"
        )
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= codec.codebook_size:
        raise ConformanceError(
            f"{name}.encode returned codes in [{low}, {high}]; the AudioCodec contract is "
            f"[0, codebook_size) = [0, {codec.codebook_size})"
        )


def check_codec_rates(factory: Factory) -> None:
    """Shapes agree with the declared rates at several lengths (0.5, 1 and 1.3 s): ``encode``
    returns ``num_frames(n)`` frames, within one frame of ``n * frame_rate / sample_rate``, and
    ``num_samples(l)`` is within one sample of ``l * sample_rate / frame_rate``."""
    codec = build(factory)
    name, sr, fr = _name(codec), codec.sample_rate, codec.frame_rate
    gen = inputs.seeded()
    for seconds in (0.5, 1.0, 1.3):
        n = round(seconds * sr)
        wav = inputs.waveform(1, codec.channels, n, sr, gen)
        codes = _tensor(_call(f"{name}.encode", codec.encode, wav), f"{name}.encode")
        l = codes.shape[-1]
        if l != codec.num_frames(n):
            raise ConformanceError(
                f"{name}.encode returned {l} frames for {n} samples ({seconds} s), but "
                f"num_frames({n}) is {codec.num_frames(n)}"
            )
        if abs(l - n * fr / sr) > 1:
            raise ConformanceError(
                f"{name}.encode returned {l} frames for {n} samples ({seconds} s), but frame_rate "
                f"{fr} at sample_rate {sr} implies {n * fr / sr:.2f}"
            )
        samples = codec.num_samples(l)
        if abs(samples - l * sr / fr) > 1:
            raise ConformanceError(
                f"{name}.num_samples({l}) is {samples}, but {l} frames at frame_rate {fr} and "
                f"sample_rate {sr} are {l * sr / fr:.1f} samples"
            )


def check_codec_decode(factory: Factory) -> None:
    """``decode`` maps codes ``[b, k, l]`` to a finite float waveform ``[b, channels,
    num_samples(l)]``; with ``length`` it returns exactly ``length`` samples, the same ones
    trimmed or followed by zeros."""
    codec = build(factory)
    name, c = _name(codec), codec.channels
    n = round(0.5 * codec.sample_rate)
    l = codec.num_frames(n)
    codes = inputs.codes(2, codec.n_codebooks, l, codec.codebook_size, inputs.seeded())
    wav = _tensor(_call(f"{name}.decode", codec.decode, codes), f"{name}.decode")
    natural = codec.num_samples(l)
    if not wav.is_floating_point() or _shape(wav) != [2, c, natural]:
        raise ConformanceError(
            f"{name}.decode returned a {wav.dtype} tensor of shape {_shape(wav)} for codes of "
            f"shape {_shape(codes)}; the AudioCodec contract is float [b, channels, "
            f"num_samples(l)] = [2, {c}, {natural}]"
        )
    if not _all_finite(wav):
        raise ConformanceError(f"{name}.decode returned non-finite samples")
    for length in (n, natural + 7):
        out = _tensor(_call(f"{name}.decode", codec.decode, codes, length=length), f"{name}.decode")
        if _shape(out) != [2, c, length]:
            raise ConformanceError(
                f"{name}.decode(codes, length={length}) returned shape {_shape(out)}; the "
                f"AudioCodec contract is exactly {length} samples, [2, {c}, {length}]"
            )
        keep = min(length, natural)
        diff = _difference({"decode": wav[..., :keep]}, {"decode": out[..., :keep]}, tol=CLOSE)
        if diff or bool((out[..., keep:] != 0).any()):
            raise ConformanceError(
                f"{name}.decode(codes, length={length}) is not the {natural}-sample decode "
                f"trimmed or zero-padded to {length} samples ({diff or 'non-zero padding'})"
            )


def check_codec_latents(factory: Factory) -> None:
    """``latents`` maps codes ``[b, k, l]`` to a finite float FeatureSequence ``[b, l, latent_dim]``
    at ``frame_rate``."""
    codec = build(factory)
    name = _name(codec)
    l = codec.num_frames(round(0.5 * codec.sample_rate))
    codes = inputs.codes(2, codec.n_codebooks, l, codec.codebook_size, inputs.seeded())
    latents = _sequence(_call(f"{name}.latents", codec.latents, codes), f"{name}.latents")
    values = latents.values
    if not values.is_floating_point() or _shape(values) != [2, l, codec.latent_dim]:
        raise ConformanceError(
            f"{name}.latents returned {values.dtype} values of shape {_shape(values)} for codes of "
            f"shape {_shape(codes)}; the AudioCodec contract is float [b, l, latent_dim] = "
            f"[2, {l}, {codec.latent_dim}]"
        )
    if not math.isclose(latents.rate, codec.frame_rate, rel_tol=1e-6):
        raise ConformanceError(
            f"{name}.latents returned a sequence at rate {latents.rate}; the AudioCodec contract "
            f"is frame_rate = {codec.frame_rate}"
        )
    if not _all_finite(values, latents.mask):
        raise ConformanceError(f"{name}.latents returned non-finite values")


# -- VisualEncoder --------------------------------------------------------------------------------


def check_visual_encoder_output(factory: Factory) -> None:
    """16 frames at ``fps`` (of ``frame_size``, or 32x32 when any size goes) give a finite float
    FeatureSequence ``[b, t', dim]`` at ``rate``, ``t'`` within one step of ``16 * rate / fps``."""
    encoder = build(factory)
    name = _name(encoder)
    ex = _visual_example(encoder, 2, inputs.seeded())
    t = ex["frames"].shape[1]
    out = _call(f"{name}.encode", encoder.encode, ex["frames"], ex["times"])
    out = _sequence(out, f"{name}.encode")
    values = out.values
    if not values.is_floating_point() or values.shape[0] != 2 or values.shape[2] != encoder.dim:
        raise ConformanceError(
            f"{name}.encode returned {values.dtype} values of shape {_shape(values)}; the "
            f"VisualEncoder contract is float [b, t', dim] = [2, t', {encoder.dim}]"
        )
    if not math.isclose(out.rate, encoder.rate, rel_tol=1e-6):
        raise ConformanceError(
            f"{name}.encode returned a sequence at rate {out.rate}; the VisualEncoder contract is "
            f"its rate attribute, {encoder.rate}"
        )
    expected = t * encoder.rate / encoder.fps
    if abs(values.shape[1] - expected) > 1:
        raise ConformanceError(
            f"{name}.encode returned {values.shape[1]} steps for {t} frames at fps {encoder.fps}, "
            f"but rate {encoder.rate} implies {expected:.2f}"
        )
    if not (_all_finite(values, out.mask) and math.isfinite(out.start)):
        raise ConformanceError(f"{name}.encode returned non-finite values or start {out.start}")


def check_visual_encoder_times(factory: Factory) -> None:
    """The output's ``start`` follows the frame ``times``: shifting ``times`` by 1.5 s shifts
    ``start`` by 1.5 s and leaves the values unchanged."""
    encoder = build(factory)
    name = _name(encoder)
    ex = _visual_example(encoder, 2, inputs.seeded())
    shift = 1.5
    base, moved = (
        _sequence(_call(f"{name}.encode", encoder.encode, ex["frames"], times), f"{name}.encode")
        for times in (ex["times"], ex["times"] + shift)
    )
    if abs((moved.start - base.start) - shift) > 1e-4:
        raise ConformanceError(
            f"{name}.encode returned start {moved.start} for times shifted by {shift} s and "
            f"{base.start} before; the start must follow the times ({base.start + shift})"
        )
    diff = _difference(_outputs("values", base), _outputs("values", moved), tol=CLOSE)
    if diff:
        raise ConformanceError(
            f"{name}.encode values change when the times shift by {shift} s ({diff})"
        )


# -- AudioEncoder ---------------------------------------------------------------------------------


def check_audio_encoder_output(factory: Factory) -> None:
    """One second of ``[b, 1, n]`` audio gives a finite float FeatureSequence ``[b, t, dim]`` at
    ``rate`` with ``t`` within two steps of ``n / sample_rate * rate``."""
    encoder = build(factory)
    name, sr = _name(encoder), encoder.sample_rate
    wav = inputs.waveform(2, 1, sr, sr, inputs.seeded())
    out = _sequence(_call(f"{name}.encode", encoder.encode, wav), f"{name}.encode")
    values = out.values
    if not values.is_floating_point() or values.shape[0] != 2 or values.shape[2] != encoder.dim:
        raise ConformanceError(
            f"{name}.encode returned {values.dtype} values of shape {_shape(values)}; the "
            f"AudioEncoder contract is float [b, t, dim] = [2, t, {encoder.dim}]"
        )
    if not math.isclose(out.rate, encoder.rate, rel_tol=1e-6):
        raise ConformanceError(
            f"{name}.encode returned a sequence at rate {out.rate}; the AudioEncoder contract is "
            f"its rate attribute, {encoder.rate}"
        )
    if abs(values.shape[1] - encoder.rate) > 2:
        raise ConformanceError(
            f"{name}.encode returned {values.shape[1]} steps for 1 s of audio, but rate "
            f"{encoder.rate} implies {encoder.rate:.2f}"
        )
    if not _all_finite(values, out.mask):
        raise ConformanceError(f"{name}.encode returned non-finite values")


# -- ConditionFuser -------------------------------------------------------------------------------


def _check_aligned(
    name: str, seq: FeatureSequence, *, batch: int, dim: int, rate: float, length: int
) -> None:
    expected = [batch, length, dim]
    if not seq.values.is_floating_point() or _shape(seq.values) != expected:
        raise ConformanceError(
            f"{name}.fuse returned aligned {seq.values.dtype} values of shape "
            f"{_shape(seq.values)} for num_frames={length}; the ConditionFuser contract is float "
            f"[b, num_frames, dim] = {expected}"
        )
    if not math.isclose(seq.rate, rate, rel_tol=1e-6) or abs(seq.start) > 1e-6:
        raise ConformanceError(
            f"{name}.fuse returned aligned at rate {seq.rate} starting at {seq.start} s; the "
            f"ConditionFuser contract is frame_rate = {rate} starting at 0 s"
        )
    if not _all_finite(seq.values, seq.mask):
        raise ConformanceError(f"{name}.fuse returned non-finite aligned values")


def _check_context(name: str, seq: FeatureSequence, *, batch: int, dim: int) -> None:
    if not seq.values.is_floating_point() or [seq.batch_size, seq.dim] != [batch, dim]:
        raise ConformanceError(
            f"{name}.fuse returned context {seq.values.dtype} values of shape "
            f"{_shape(seq.values)}; the ConditionFuser contract is float [b, s, dim] = "
            f"[{batch}, s, {dim}]"
        )
    valid = seq.valid_mask()
    if valid.dtype != torch.bool or not bool(valid.any(dim=1).all()):
        raise ConformanceError(
            f"{name}.fuse returned a context mask of dtype {valid.dtype} with "
            f"{valid.sum(dim=1).tolist()} valid steps per row; it must be bool with at least "
            "one valid step per row"
        )
    if not _all_finite(seq.values, valid):
        raise ConformanceError(f"{name}.fuse returned non-finite context values")


def check_fuser_output(factory: Factory) -> None:
    """Streams at their own rates and lengths (8 Hz, 3.125 Hz, 25 Hz; with padding) give the
    parts the flags promise: ``aligned`` finite ``[b, num_frames, dim]`` at ``frame_rate``
    starting at 0 s, ``context`` finite ``[b, s, dim]`` with at least one valid step per row.
    Tried at 50 Hz x 100 frames and at 21.5 Hz x 37 frames."""
    fuser = build(factory)
    name, b = _name(fuser), 2
    for frame_rate, num_frames in ((50.0, 100), (21.5, 37)):
        ex = _fuser_example(fuser, b, inputs.seeded())
        out = _fuse(fuser, {**ex, "frame_rate": frame_rate, "num_frames": num_frames})
        for part in ("aligned", "context"):
            present, provided = getattr(out, part) is not None, getattr(fuser, f"provides_{part}")
            if present != provided:
                raise ConformanceError(
                    f"{name}.fuse returned {'a' if present else 'no'} Conditioning.{part}, but "
                    f"{name}.provides_{part} is {provided}"
                )
        if out.aligned is not None:
            _check_aligned(
                name, out.aligned, batch=b, dim=fuser.dim, rate=frame_rate, length=num_frames
            )
        if out.context is not None:
            _check_context(name, out.context, batch=b, dim=fuser.dim)


def check_fuser_padding(factory: Factory) -> None:
    """Padded steps of the input streams are never read: filling them with huge random values
    instead of zeros changes neither the output masks nor the outputs at valid steps."""
    fuser = build(factory)
    gen = inputs.seeded()
    ex = _fuser_example(fuser, 2, gen, pad_all=True)
    zeros = {k: inputs.fill_padding(s, 0.0) for k, s in ex["streams"].items()}
    huge = {
        k: inputs.fill_padding(s, HUGE * torch.randn(s.values.shape, generator=gen))
        for k, s in ex["streams"].items()
    }
    diff = _difference(
        _fuser_run(fuser, {**ex, "streams": zeros}), _fuser_run(fuser, {**ex, "streams": huge}),
        tol=CLOSE,
    )
    if diff:
        raise ConformanceError(
            f"{_name(fuser)}.fuse reads padded steps: putting large values instead of zeros where "
            f"the stream masks are False changes its output ({diff})"
        )


# -- MaskedGenerator ------------------------------------------------------------------------------


def check_generator_output(factory: Factory) -> None:
    """Codes ``[b, k, l]`` with a mask and conditioning give finite float logits ``[b, k, l,
    codebook_size]``; with ``return_hidden=True`` also hidden states ``[b, l, hidden_dim]``; with
    ``level=j``, ``predict`` gives exactly ``logits[:, j:j + 1]``."""
    generator = build(factory)
    name = _name(generator)
    ex = _generator_example(generator, 2, inputs.seeded())
    b, k, l = ex["codes"].shape
    expected = [b, k, l, generator.codebook_size]
    logits = _generator_call(generator, ex)
    if not logits.is_floating_point() or _shape(logits) != expected:
        raise ConformanceError(
            f"{name} returned {logits.dtype} logits of shape {_shape(logits)} for codes of shape "
            f"{[b, k, l]}; the MaskedGenerator contract is float [b, k, l, codebook_size] = "
            f"{expected}"
        )
    if not _all_finite(logits):
        raise ConformanceError(f"{name} returned non-finite logits")
    out = _call(f"{name}.forward with return_hidden=True", generator, ex["codes"], ex["mask"],
                ex["condition"], return_hidden=True)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ConformanceError(
            f"{name}.forward(..., return_hidden=True) returned {type(out).__name__}; the contract "
            "is a (logits, hidden) pair"
        )
    hidden = _tensor(out[1], f"{name} hidden states")
    if _shape(hidden) != [b, l, generator.hidden_dim] or not hidden.is_floating_point():
        raise ConformanceError(
            f"{name} returned hidden states of shape {_shape(hidden)}; the MaskedGenerator "
            f"contract is float [b, l, hidden_dim] = {[b, l, generator.hidden_dim]}"
        )
    diff = _difference({"logits": logits}, {"logits": _tensor(out[0], name)}, tol=CLOSE)
    if diff:
        raise ConformanceError(f"{name} returns other logits with return_hidden=True ({diff})")
    prepared = _call(f"{name}.prepare", generator.prepare, ex["condition"])
    for level in (0, k - 1):
        one = _tensor(_call(f"{name}.predict with level={level}", generator.predict, ex["codes"],
                            ex["mask"], prepared, level=level), f"{name}.predict")
        diff = _difference({"logits": logits[:, level:level + 1]}, {"logits": one}, tol=CLOSE)
        if _shape(one) != [b, 1, l, generator.codebook_size] or diff:
            raise ConformanceError(
                f"{name}.predict(..., level={level}) returned {_shape(one)} logits that are not "
                f"logits[:, {level}:{level + 1}] of the full prediction ({diff or 'shape'})"
            )


def check_generator_masked_codes(factory: Factory) -> None:
    """Code values where ``mask`` is True are never read: changing them leaves the logits as
    they were."""
    generator = build(factory)
    if generator.codebook_size < 2:
        return
    gen = inputs.seeded()
    ex = _generator_example(generator, 2, gen)
    codes, mask = ex["codes"], ex["mask"]
    shift = torch.randint(1, generator.codebook_size, codes.shape, generator=gen)
    changed = torch.where(mask, (codes + shift) % generator.codebook_size, codes)
    diff = _difference(
        {"logits": _generator_call(generator, ex)},
        {"logits": _generator_call(generator, ex, codes=changed)},
        tol=CLOSE,
    )
    if diff:
        raise ConformanceError(
            f"{_name(generator)} reads masked codes: changing the codes where mask is True changes "
            f"the logits ({diff})"
        )


def check_generator_drop(factory: Factory) -> None:
    """``drop`` replaces the conditioning of its True rows by the unconditional one: with
    ``drop=ones`` the logits do not depend on the conditioning at all, and ``drop=[True, False]``
    gives row 0 the unconditional logits and row 1 the conditional ones."""
    generator = build(factory)
    name = _name(generator)
    gen = inputs.seeded()
    ex = _generator_example(generator, 2, gen)
    other = _condition(generator, 2, ex["codes"].shape[-1], gen)
    ones = torch.ones(2, dtype=torch.bool)
    unconditional = _generator_call(generator, ex, " with drop", drop=ones)
    again = _generator_call(generator, ex, " with drop", drop=ones, condition=other)
    diff = _difference({"logits": unconditional}, {"logits": again}, tol=CLOSE)
    if diff:
        raise ConformanceError(
            f"{name} with drop=torch.ones(b, dtype=torch.bool) still depends on the conditioning: "
            f"two different conditionings give different logits ({diff})"
        )
    conditional = _generator_call(generator, ex)
    mixed = _generator_call(generator, ex, " with drop", drop=torch.tensor([True, False]))
    expected = torch.cat([unconditional[:1], conditional[1:]])
    diff = _difference({"logits": expected}, {"logits": mixed}, tol=CLOSE)
    if diff:
        raise ConformanceError(
            f"{name} with drop=[True, False] does not give row 0 the unconditional logits and row "
            f"1 the conditional ones ({diff})"
        )


def check_generator_prepared(factory: Factory) -> None:
    """``prepare`` returns a Conditioning with one row per input row, which ``predict`` reads
    as it is: selecting (or repeating) rows of the prepared conditioning, as a sampler does for
    candidates, gives the logits of ``forward`` on the same rows."""
    generator = build(factory)
    name = _name(generator)
    ex = _generator_example(generator, 2, inputs.seeded())
    drop = torch.tensor([False, True])
    prepared = _call(f"{name}.prepare", generator.prepare, ex["condition"], drop=drop)
    if not isinstance(prepared, Conditioning) or prepared.batch_size != 2:
        raise ConformanceError(
            f"{name}.prepare returned {type(prepared).__name__}; the contract is a Conditioning "
            "with one row per input row"
        )
    order = torch.tensor([1, 0, 1])
    codes, mask = ex["codes"][order], ex["mask"][order]
    picked = _tensor(_call(f"{name}.predict", generator.predict, codes, mask, prepared.index_select(order)),
                     f"{name}.predict")
    direct = _generator_call(generator, ex, " with drop", drop=drop)[order]
    diff = _difference({"logits": direct}, {"logits": picked}, tol=CLOSE)
    if diff:
        raise ConformanceError(
            f"{name}.predict on rows selected from a prepared conditioning does not give the "
            f"logits of forward on those rows; state outside the Conditioning? ({diff})"
        )


def check_generator_context_padding(factory: Factory) -> None:
    """Padded steps of ``Conditioning.context`` are never read: filling them with huge values
    instead of zeros leaves the logits unchanged. Passes when the generator uses no context."""
    generator = build(factory)
    if not generator.uses_context:
        return
    gen = inputs.seeded()
    ex = _generator_example(generator, 2, gen)
    condition, context = ex["condition"], ex["condition"].context
    noise = HUGE * torch.randn(context.values.shape, generator=gen)
    runs = [
        _generator_call(generator, ex, condition=Conditioning(
            aligned=condition.aligned, context=inputs.fill_padding(context, fill)
        ))
        for fill in (0.0, noise)
    ]
    diff = _difference({"logits": runs[0]}, {"logits": runs[1]}, tol=CLOSE)
    if diff:
        raise ConformanceError(
            f"{_name(generator)} reads padded context steps: putting large values instead of zeros "
            f"where the context mask is False changes the logits ({diff})"
        )


# -- Reranker -------------------------------------------------------------------------------------


def check_reranker_scores(factory: Factory) -> None:
    """Candidates ``[b, n, 1, s]`` (0.5 s at ``sample_rate``) and video streams ``[b, 8, d]`` at
    8 Hz give finite float scores ``[b, n]``."""
    reranker = build(factory)
    ex = _reranker_example(reranker, 2, inputs.seeded())
    scores = _reranker_score(reranker, ex)
    b, n = ex["candidates"].shape[:2]
    if not scores.is_floating_point() or _shape(scores) != [b, n]:
        raise ConformanceError(
            f"{_name(reranker)}.score returned {scores.dtype} scores of shape {_shape(scores)} for "
            f"candidates of shape {_shape(ex['candidates'])}; the Reranker contract is float "
            f"[b, n] = [{b}, {n}]"
        )
    if not _all_finite(scores):
        raise ConformanceError(f"{_name(reranker)}.score returned non-finite scores")


def check_reranker_permutation(factory: Factory) -> None:
    """Reordering the candidates reorders the scores the same way."""
    reranker = build(factory)
    ex = _reranker_example(reranker, 2, inputs.seeded())
    order = torch.tensor([2, 0, 1])
    scores = _reranker_score(reranker, ex)
    permuted = _reranker_score(reranker, {**ex, "candidates": ex["candidates"][:, order]})
    diff = _difference({"scores": scores[:, order]}, {"scores": permuted}, tol=CLOSE)
    if diff:
        raise ConformanceError(
            f"{_name(reranker)}.score is not permutation equivariant: reordering the candidates "
            f"by {order.tolist()} does not reorder the scores the same way ({diff})"
        )


def check_reranker_select(factory: Factory) -> None:
    """``select`` returns ``[b]`` integer indices in ``[0, n)``: per video the first candidate
    with the highest score."""
    reranker = build(factory)
    name = _name(reranker)
    ex = _reranker_example(reranker, 2, inputs.seeded())
    b, n = ex["candidates"].shape[:2]
    index = _call(f"{name}.select", reranker.select, ex["candidates"], ex["video"])
    index = _tensor(index, f"{name}.select")
    if index.is_floating_point() or index.dtype == torch.bool or _shape(index) != [b]:
        raise ConformanceError(
            f"{name}.select returned a {index.dtype} tensor of shape {_shape(index)}; the Reranker "
            f"contract is integer indices [b] = [{b}]"
        )
    if bool((index < 0).any() or (index >= n).any()):
        raise ConformanceError(
            f"{name}.select returned {index.tolist()}; indices must lie in [0, {n})"
        )
    scores = _reranker_score(reranker, ex).cpu()
    best = scores >= scores.max(dim=1, keepdim=True).values
    expected = best.int().argmax(dim=1)  # the first maximum
    if not torch.equal(index.cpu().long(), expected):
        raise ConformanceError(
            f"{name}.select returned {index.tolist()}, but the first best-scoring candidates are "
            f"{expected.tolist()} (scores {scores.tolist()})"
        )


# -- tables ---------------------------------------------------------------------------------------

#: Checks every component runs, whatever its kind.
COMMON_CHECKS: list[Check] = [
    check_interface,
    check_declared_properties,
    check_state_round_trip,
    check_dtype_move,
    check_device_move,
    check_deterministic,
    check_batch_independence,
]

_KIND_CHECKS: dict[str, list[Check]] = {
    "codec": [check_codec_encode, check_codec_rates, check_codec_decode, check_codec_latents],
    "visual_encoder": [check_visual_encoder_output, check_visual_encoder_times],
    "audio_encoder": [check_audio_encoder_output],
    "fuser": [check_fuser_output, check_fuser_padding],
    "generator": [
        check_generator_output, check_generator_masked_codes, check_generator_drop,
        check_generator_prepared, check_generator_context_padding,
    ],
    "reranker": [check_reranker_scores, check_reranker_permutation, check_reranker_select],
}

#: Every check a component of each kind runs: the common checks, then the kind's own.
CHECKS: dict[str, list[Check]] = {kind: [*COMMON_CHECKS, *_KIND_CHECKS[kind]] for kind in KINDS}


def checks_for(component: Component) -> list[Check]:
    """The checks that apply to ``component`` (only :func:`check_interface`, which then fails,
    when it implements none of the interfaces)."""
    kind = kind_of(component)
    return list(CHECKS[kind]) if kind is not None else [check_interface]

"""The checks every component runs, whatever its kind: the interface and its attributes, the
declared properties, state, dtype and device moves, determinism and batch independence. Each
runs the component through its kind's :class:`~v2a.testing.checks.support.Probe`."""

from __future__ import annotations

import math
import numbers
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from v2a.interfaces import KINDS, Component
from v2a.testing import inputs
from v2a.testing.checks import (
    audio_encoder,
    codec,
    fuser,
    generator,
    reranker,
    text_encoder,
    visual_encoder,
)
from v2a.testing.checks.support import (
    CLOSE,
    CODE_FLIPS,
    SAME,
    ConformanceError,
    Factory,
    Probe,
    build,
    component_name,
    difference,
    factory_id,
    kind_of,
    reported,
)

#: How the common checks run each kind.
PROBES: dict[str, Probe] = {
    "codec": codec.PROBE,
    "visual_encoder": visual_encoder.PROBE,
    "audio_encoder": audio_encoder.PROBE,
    "fuser": fuser.PROBE,
    "generator": generator.PROBE,
    "reranker": reranker.PROBE,
    "text_encoder": text_encoder.PROBE,
}


def _probe(component: Component) -> Probe:
    kind = kind_of(component)
    if kind is None:
        raise ConformanceError(f"{component_name(component)} implements none of the v2a interfaces")
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
              "stream_dims": WIDTHS, "accepts_text": BOOL},
    "generator": {"n_codebooks": INT, "codebook_size": INT, "condition_dim": INT, "hidden_dim": INT,
                  "uses_aligned": BOOL, "uses_context": BOOL},
    "reranker": {"sample_rate": INT, "video_streams": WIDTHS},
    "text_encoder": {"dim": INT, "pooled_dim": INT, "max_tokens": INT},
}


def check_interface(factory: Factory) -> None:
    """The factory builds an instance of one of the seven interfaces whose documented attributes
    are all set to sane values (positive ints, positive finite rates, real bools, ``str -> int``
    mappings); a fuser provides, and a generator uses, at least one kind of conditioning."""
    component = build(factory)
    name, kind = component_name(component), kind_of(component)
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
    with reported(f"the declared properties of {factory_id(factory)}"):
        declared = dict(declare() or {})
    if not declared:
        return
    component = build(factory)
    name, kind = component_name(component), kind_of(component)
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
    name = component_name(source)
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
        with reported(f"safetensors.torch.save_file of {name}.state_dict()"):
            save_file(tensors, path)
        loaded = load_file(path)
    with reported(f"{name}.load_state_dict(strict=True) of its own saved state_dict"):
        target.load_state_dict(loaded, strict=True)
    probe = _probe(source)
    example = probe.example(source, 2, inputs.seeded())
    diff = difference(probe.run(source, example), probe.run(target, example), tol=SAME)
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
    name, probe = component_name(component), _probe(component)
    example = probe.example(component, 2, inputs.seeded())
    before = probe.run(component, example)
    with reported(f"{name}.to(torch.float64)"):
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
    name, probe = component_name(component), _probe(component)
    example = probe.example(component, 2, inputs.seeded())
    with reported(f"{name}.to('cuda')"):
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
    diff = difference(first, second, tol=SAME)
    if diff:
        raise ConformanceError(
            f"{component_name(component)} is not deterministic in eval mode: a second call on the same "
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
        diff = difference(
            inputs.batch_rows(full, rows), probe.run(component, alone),
            tol=CLOSE, code_flips=CODE_FLIPS,
        )
        if diff:
            raise ConformanceError(
                f"{component_name(component)} is not batch independent: row {i} of a batch of {batch} gives "
                f"different outputs than the same row alone ({diff})"
            )

"""What every conformance check shares: :class:`ConformanceError`, the tolerances, building a
component from its factory, calling it with its exceptions reported, and comparing outputs.

Also :class:`Probe`, the way the common checks run a component of each kind; each kind's module
(:mod:`~v2a.testing.checks.codec`, ...) defines its own.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from v2a.interfaces import KINDS, Component
from v2a.sequences import FeatureSequence
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
    with torch.random.fork_rng(devices=[]), reported(f"the factory {factory_id(factory)}"):
        torch.manual_seed(seed)
        component = factory()
    if not isinstance(component, Component):
        raise ConformanceError(
            f"the factory {factory_id(factory)} returned a {type(component).__name__}, which is "
            "not a v2a.interfaces.Component"
        )
    return component.eval()


def component_name(component: Component) -> str:
    return type(component).__name__


@contextlib.contextmanager
def reported(what: str):
    """Turn an exception raised inside into a ConformanceError saying that ``what`` raised it
    (chained, so the component's own traceback is kept)."""
    try:
        yield
    except ConformanceError:
        raise
    except Exception as exc:
        raise ConformanceError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def call(what: str, fn: Callable, *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` under inference mode, its exceptions reported as ``what``'s."""
    with reported(what), torch.inference_mode():
        return fn(*args, **kwargs)


def as_tensor(obj: Any, what: str) -> Tensor:
    if not isinstance(obj, Tensor):
        raise ConformanceError(f"{what} returned a {type(obj).__name__}, not a torch.Tensor")
    return obj


def as_sequence(obj: Any, what: str) -> FeatureSequence:
    if not isinstance(obj, FeatureSequence):
        raise ConformanceError(f"{what} returned a {type(obj).__name__}, not a FeatureSequence")
    return obj


def shape_of(t: Tensor) -> list[int]:
    return list(t.shape)


def all_finite(t: Tensor, mask: Tensor | None = None) -> bool:
    if mask is not None:
        t = t[mask]
    return bool(torch.isfinite(t).all())


def outputs_of(key: str, sequence: FeatureSequence) -> dict[str, Tensor]:
    """A sequence as named output tensors: ``key`` (values) and ``key.mask`` if it has one."""
    out = {key: sequence.values}
    if sequence.mask is not None:
        out[f"{key}.mask"] = sequence.mask
    return out


def with_huge_padding(sequence: FeatureSequence, gen: torch.Generator) -> FeatureSequence:
    """``sequence`` with random values of magnitude :data:`HUGE` at its padded steps, to see
    whether a component reads them."""
    return inputs.fill_padding(sequence, HUGE * torch.randn(sequence.values.shape, generator=gen))


def check_features(
    what: str, out: FeatureSequence, *, interface: str, batch: int, dim: int, rate: float,
    steps: str = "t",
) -> None:
    """``out``, returned by ``what``, holds float values ``[batch, steps, dim]`` at ``rate``,
    as the contract of ``interface`` says (``steps`` names the time axis in the message)."""
    values = out.values
    if (not values.is_floating_point() or values.dim() != 3 or values.shape[0] != batch
            or values.shape[2] != dim):
        raise ConformanceError(
            f"{what} returned {values.dtype} values of shape {shape_of(values)}; the "
            f"{interface} contract is float [b, {steps}, dim] = [{batch}, {steps}, {dim}]"
        )
    if not math.isclose(out.rate, rate, rel_tol=1e-6):
        raise ConformanceError(
            f"{what} returned a sequence at rate {out.rate}; the {interface} contract is "
            f"its rate attribute, {rate}"
        )


def difference(
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
            return f"{key} has shape {shape_of(a)} instead of {shape_of(e)}"
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

"""soundstorm-pytorch 0.6.1 as a peer of v2a's sampler, on workload B1's token shape.

soundstorm-pytorch is a public implementation of SoundStorm (Borsos et al., 2023): a Conformer
that fills in masked residual-codebook tokens level by level, as v2a's MaskVAT generator does.
The peer is built at B1's sizes: ``ConformerWrapper(codebook_size=1024, num_quantizers=9,
conformer=dict(dim=512, depth=8, heads=8, dim_head=64))`` with every other option at the
package's default (feed-forward ×4, convolution kernel 31, 4 hyper-connection residual streams,
rotary positions, ``scaled_dot_product_attention``), random init, about 62 M parameters;
``SoundStorm(net, steps=16).generate(num_latents=345, batch_size=4)`` under bf16 autocast
(fp32 weights). Its ``generate`` runs ``steps`` forwards on the first level and one on each
later level: 16 + 8 = 24 forwards of 4 rows, the same decoding steps as B1's ``(16, 1)``
schedule. It has no classifier-free guidance, so each row is one pass; v2a's B1 rows are
candidates × guidance passes (4 × 2). The two are compared per row-forward: seconds of the
whole call divided by (rows per forward × forwards).

Install, without its dependencies (they would downgrade omegaconf to 2.0 and upgrade protobuf
to 7, and pull fairseq 0.12, which fails at import on Python 3.11)::

    pip install --no-deps soundstorm-pytorch==0.6.1 beartype==0.23.1 hyper-connections==0.4.11 torch-einops-utils==0.2.0

Inert imports. ``soundstorm_pytorch`` imports, at import time, modules that token generation
never calls: ``audiolm_pytorch`` (``SoundStream``, ``HubertWithKmeans``, ``FairseqVQWav2Vec``,
and its ``data``/``optimizer`` helpers for the trainer), ``spear_tts_pytorch``
(``TextToSemantic``) and ``accelerate`` (the trainer). When one of them cannot be imported,
:func:`import_package` puts an inert module in its place in ``sys.modules`` while
``soundstorm_pytorch`` imports, and takes it out again afterwards (only from here, never from
``v2a/``): its names are classes that raise
:class:`NotInstalledForTheBenchmark` when constructed or called. They are there only so that
``soundstorm_pytorch`` imports and its type annotations resolve; a peer built the way
:func:`build` builds it never uses them. The names that were made inert are in the figures
(``inert``) and in the report. Nothing in torch is patched.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import sys
import time
import warnings
from types import ModuleType

import torch

from v2a.sampler import level_steps
from v2a.machine import cpu_model

INSTALL = ("soundstorm-pytorch is not installed: install it with `pip install --no-deps "
           "soundstorm-pytorch==0.6.1 beartype==0.23.1 hyper-connections==0.4.11 "
           "torch-einops-utils==0.2.0` (see benchmarks/peers/soundstorm.py)")

# package -> {module: names that soundstorm_pytorch imports from it at import time}
INERT_MODULES = {
    "audiolm_pytorch": {
        "audiolm_pytorch": ("SoundStream", "HubertWithKmeans", "FairseqVQWav2Vec"),
        "audiolm_pytorch.data": ("get_dataloader",),
        "audiolm_pytorch.optimizer": ("get_optimizer",),
    },
    "spear_tts_pytorch": {"spear_tts_pytorch": ("TextToSemantic",)},
    "accelerate": {"accelerate": ("Accelerator", "DistributedType")},
}


class NotInstalledForTheBenchmark(RuntimeError):
    """A name of an inert module was used: the benchmark's peer never should."""


def _inert_class(module: str, name: str) -> type:
    def refuse(*args, **kwargs):
        raise NotInstalledForTheBenchmark(
            f"{module}.{name} is an inert placeholder of benchmarks/peers/soundstorm.py "
            "(the package is not installed; SoundStorm's token generation does not use it)")

    return type(name, (), {"__new__": refuse, "__doc__": f"Inert placeholder for {module}.{name}."})


def _make_inert(package: str) -> None:
    for module_name, names in INERT_MODULES[package].items():
        module = ModuleType(module_name, "Inert placeholder (benchmarks/peers/soundstorm.py).")
        module.__path__ = []  # a package: its submodules resolve through sys.modules
        for name in names:
            setattr(module, name, _inert_class(module_name, name))
        sys.modules[module_name] = module
        parent, _, child = module_name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def import_package() -> tuple[ModuleType, list[str]]:
    """``soundstorm_pytorch`` and the names of the packages made inert to import it (see the
    module's docstring). Raises ``ImportError`` when soundstorm-pytorch itself is not installed."""
    if importlib.util.find_spec("soundstorm_pytorch") is None:
        raise ImportError("No module named 'soundstorm_pytorch'")
    if "soundstorm_pytorch" in sys.modules:
        return sys.modules["soundstorm_pytorch"], sorted(_made_inert)
    placed = []
    for package in INERT_MODULES:
        try:
            importlib.import_module(package)  # the real one, when it is installed and imports
        except Exception:  # noqa: BLE001  missing, or failing at import (fairseq on 3.11)
            _make_inert(package)
            _made_inert.add(package)
            placed += list(INERT_MODULES[package])
    try:
        return importlib.import_module("soundstorm_pytorch"), sorted(_made_inert)
    finally:  # soundstorm keeps its references; nothing else in the process sees a placeholder
        for module_name in placed:
            sys.modules.pop(module_name, None)


_made_inert: set[str] = set()  # the packages this process holds inert placeholders for


def build(work, *, seed: int = 0):
    """The peer at the sizes of ``work`` (a ``bench_generate.Workload``), random init: a
    ``SoundStorm`` whose ``generate`` decodes ``work.steps[0]`` steps on the first level and
    one on each later level (``work.steps`` must be ``(n, 1)``)."""
    steps = tuple(work.steps)
    if len(steps) != 2 or steps[1] != 1:
        raise ValueError(f"soundstorm decodes levels after the first in one step; steps {steps} "
                         "must be (n, 1)")
    package, _ = import_package()
    torch.manual_seed(seed)
    net = package.ConformerWrapper(
        codebook_size=work.codebook_size, num_quantizers=work.n_codebooks,
        conformer=dict(dim=work.width, depth=work.layers, heads=work.heads,
                       dim_head=work.width // work.heads),
    )
    return package.SoundStorm(net, steps=steps[0]).eval()


def v2a_rows_and_forwards(workload: dict) -> tuple[int, int]:
    """Rows per ``predict`` and ``predict`` calls of ``bench_generate.run``'s sampler on
    ``workload`` (its figures' ``workload``): one ``predict`` per decoding step, on candidates ×
    guidance passes rows (2 passes with classifier-free guidance, else 1)."""
    passes = 1 if workload["cfg_scale"] in (0, 1) else 2
    forwards = sum(level_steps(list(workload["steps"]), workload["n_codebooks"]))
    return passes * workload["candidates"], forwards


def forward_flops(model, tokens: torch.Tensor) -> int:
    """FLOPs of one forward of the peer's network on ``tokens`` (torch's FLOP counter; 2 per
    multiply-add). Counted with the package's own written-out attention (its ``Attend`` modules'
    ``flash`` off for this call, then restored), whose matmuls the counter sees; the CPU kernel
    of ``scaled_dot_product_attention`` is not counted by it. ``model`` may be on the meta
    device."""
    from torch.utils.flop_counter import FlopCounterMode

    attends = [m for m in model.modules() if type(m).__name__ == "Attend"]
    flash = [m.flash for m in attends]
    try:
        for m in attends:
            m.flash = False
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.net(tokens)
    finally:
        for m, was in zip(attends, flash):
            m.flash = was
    return counter.get_total_flops()


def run(work, result: dict, *, seed: int = 0) -> dict:
    """Time the peer's ``generate`` on the token shape of ``work`` under bf16 autocast, after a
    warm-up forward; return its figures and the per-row-forward ratio to each precision of v2a's
    sampler in ``result`` (``fast``, and ``compiled`` when there: keys ``"bf16"``,
    ``"bf16, compiled"``, ...). The peer's rows and forwards are counted by a hook on its network."""
    with torch.device("meta"):  # the FLOPs of a copy without storage: no compute, no memory
        meta = build(work, seed=seed)
        row_flops = forward_flops(meta, torch.zeros(1, work.num_frames * work.n_codebooks,
                                                    dtype=torch.long))
    model = build(work, seed=seed)
    _, inert = import_package()
    calls = {"forwards": 0, "rows": 0}

    def count(module, args, kwargs):
        calls["forwards"] += 1
        calls["rows"] += args[0].shape[0]

    load_before = os.getloadavg()
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        # the package calls the deprecated torch.backends.cuda.sdp_kernel and draws tqdm bars
        warnings.simplefilter("ignore", FutureWarning)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            tokens = torch.zeros(work.candidates, work.num_frames * work.n_codebooks,
                                 dtype=torch.long)
            model.net(tokens)  # warm-up: the bf16 kernels' first call
            hook = model.net.register_forward_pre_hook(count, with_kwargs=True)
            start = time.perf_counter()
            codes = model.generate(num_latents=work.num_frames, batch_size=work.candidates)
            seconds = time.perf_counter() - start
            hook.remove()
    figures = {
        "name": "soundstorm-pytorch 0.6.1", "precision": "bf16 autocast",
        "parameters": sum(p.numel() for p in model.parameters()),
        "embedding_parameters": model.net.code_embeds.weight.numel(),  # a lookup, no matmul
        "seconds": seconds, "forwards": calls["forwards"], "row_forwards": calls["rows"],
        "seconds_per_row_forward": seconds / calls["rows"], "inert": inert,
        "flops_per_row_forward": row_flops, "gflops": row_flops * calls["rows"] / seconds / 1e9,
        "load_average": [load_before, os.getloadavg()], "codes_shape": list(codes.shape),
        "cpu": cpu_model(), "threads": torch.get_num_threads(),
        "v2a": {},
    }
    rows, forwards = v2a_rows_and_forwards(result["workload"])
    runs = {precision: fast for precision, fast in result["fast"].items()}
    runs |= {f"{precision}, compiled": fast for precision, fast in result.get("compiled", {}).items()}
    for label, fast in runs.items():
        per_row = fast["seconds"] / (rows * forwards)
        figures["v2a"][label] = {
            "seconds": fast["seconds"], "rows": rows, "forwards": forwards,
            "seconds_per_row_forward": per_row, "gflops": fast["gflops"],
            "flops_per_row_forward": result["flops_fast"] / (rows * forwards),
            "peer_over_v2a": figures["seconds_per_row_forward"] / per_row,
        }
    return figures


def report(figures: dict) -> str:
    """The peer's table: v2a's sampler and the peer, seconds per row-forward, and the ratio."""
    (before, after) = figures["load_average"]
    lines = [
        f"Peer: {figures['name']} ({figures['parameters'] / 1e6:.1f} M parameters, "
        f"{(figures['parameters'] - figures['embedding_parameters']) / 1e6:.1f} M without the "
        f"code embedding table; random init, "
        f"{figures['precision']}, no guidance); {figures['cpu']}, {figures['threads']} threads; "
        f"load average {before[0]:.2f} before, "
        f"{after[0]:.2f} after; made inert: {', '.join(figures['inert']) or 'nothing'}",
        "",
        "| model | precision | time (s) | rows x forwards | s per row-forward | "
        "GFLOP per row-forward | GFLOP/s | peer / v2a per row-forward |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for precision, v2a in figures["v2a"].items():
        lines.append(f"| v2a sampler | {precision} | {v2a['seconds']:.2f} | "
                     f"{v2a['rows']} x {v2a['forwards']} | "
                     f"{v2a['seconds_per_row_forward']:.4f} | "
                     f"{v2a['flops_per_row_forward'] / 1e9:.1f} | {v2a['gflops']:.0f} | "
                     f"{v2a['peer_over_v2a']:.2f} |")
    rows = figures["row_forwards"] // figures["forwards"]
    lines.append(f"| {figures['name']} | {figures['precision']} | {figures['seconds']:.2f} | "
                 f"{rows} x {figures['forwards']} | {figures['seconds_per_row_forward']:.4f} | "
                 f"{figures['flops_per_row_forward'] / 1e9:.1f} | {figures['gflops']:.0f} | |")
    lines.append("")
    lines.append("rows x forwards: v2a, candidates x guidance passes per `predict` x decoding "
                 "steps (its time includes the fuser and `prepare`, once); the peer, counted by a "
                 "hook on its network over one `generate`. GFLOP: matmul and convolution FLOPs "
                 "(v2a: bench_generate's count, `prepare` spread over the row-forwards; the peer: "
                 "torch's FLOP counter on one forward of one row, on the meta device)")
    return "\n".join(lines)

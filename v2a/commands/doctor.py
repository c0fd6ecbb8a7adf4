"""``v2a doctor [RECIPE] [key=value ...] [--json]``: what this machine and installation give v2a,
and whether a recipe can run here offline.

The report has one section per thing v2a depends on: torch (version, CUDA or CPU-only build,
each GPU with its memory and native bf16 support, MPS), the CPU (model, the kernels torch
dispatches to, bf16 and AMX support), threads, PyAV and the FFmpeg codecs v2a writes and reads,
the optional extras of v2a (read from the installed package's metadata, each requirement with
the version found), and the registered plug-ins. Given a recipe, it adds each component's
weights and whether they are on this machine:

* ``none``: random initialisation, nothing to fetch;
* a local path: present (with its size) or missing;
* an ``http(s)://`` or ``hf://`` address: downloaded already into its cache, or to be
  downloaded on first use (:mod:`v2a.downloads`, :mod:`v2a.hub`), which needs internet;
* ``pretrained``: the plug-in's own library downloads and caches it on first use. Where the
  plug-in declares the files (``ComponentSpec.pretrained_files``) they are looked up in that
  library's cache, and a missing one counts as missing (``v2a download RECIPE`` fetches it);
  otherwise v2a cannot tell, and this is said but not counted as missing.

The exit status is 0 when everything needed is there, 1 otherwise; the last line says which, in
one sentence. Needed: the codecs :data:`MEDIA_CODECS` marks (the encoders of v2a's outputs, the
H.264 and AAC decoders) and, for a recipe, the optional libraries of its components and every
weights file and download it names. A recipe that does not validate exits 2, as everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from v2a import __version__
from v2a.commands.common import RECIPE_HELP
from v2a.downloads import cache_folder
from v2a.errors import RecipeError, UserError

if TYPE_CHECKING:
    from v2a.recipe import Recipe
    from v2a.registry import Registry

# torch, PyAV and the registry are imported by the functions that look at them, so that
# `v2a doctor --help` (and `v2a download --help`, which shares helpers) imports none of them.

#: Where the docs say how to install the torch build that fits the machine.
INSTALL_DOCS = "docs/training.md, section 'Installing for the machine you have'"


# -- torch and the hardware it sees --------------------------------------------------------------


def torch_facts() -> dict[str, Any]:
    import torch
    """torch's version, build, accelerators and threads."""
    if torch.version.cuda:
        build = f"CUDA {torch.version.cuda}"
    elif getattr(torch.version, "hip", None):
        build = f"ROCm {torch.version.hip}"
    else:
        build = "CPU-only"
    cuda = torch.cuda.is_available()
    return {
        "version": torch.__version__,
        "build": build,
        "cuda_available": cuda,
        "gpus": [gpu_facts(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "mps_available": torch.backends.mps.is_available(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def gpu_facts(index: int) -> dict[str, Any]:
    """GPU ``index``: its name, memory, compute capability and native bf16 support."""
    import torch
    props = torch.cuda.get_device_properties(index)
    # AMD GPUs, and NVIDIA's from compute capability 8.0 (Ampere) on, do bf16 natively: the
    # test of torch.cuda.is_bf16_supported(including_emulation=False), for any device
    bf16 = bool(getattr(torch.version, "hip", None)) or props.major >= 8
    return {"index": index, "name": props.name, "memory_bytes": props.total_memory,
            "capability": f"{props.major}.{props.minor}", "bf16": bf16}


#: The /proc/cpuinfo flags that say how fast bf16 matrix products can be on an x86 CPU.
CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
#: torch's own detection of the same (private helpers of ``torch.cpu``; absent in some builds).
TORCH_CPU_CHECKS = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported"}


def cpu_facts(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU's model, the kernels torch dispatches to, and its bf16/AMX capability as
    /proc/cpuinfo (``flags``: ``None`` where it cannot be read, or on a CPU other than x86) and
    torch (``torch_detects``: ``None`` where this torch cannot tell) see it."""
    import torch
    model, flags = platform.processor() or platform.machine(), None
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and flags is None:
            flags = set(value.split())
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    detected = {}
    for name, helper in TORCH_CPU_CHECKS.items():
        check = getattr(torch.cpu, helper, None)
        detected[name] = bool(check()) if callable(check) else None
    return {
        "model": model,
        "machine": platform.machine(),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_detects": detected,
        "flags": {f: f in flags for f in CPU_FLAGS} if flags is not None and x86 else None,
    }


def cpu_bf16(facts: dict[str, Any]) -> str:
    """What the CPU offers bf16 matrix products, from :func:`cpu_facts`."""
    flags, detected = facts["flags"] or {}, facts["torch_detects"]
    if flags.get("amx_bf16") or detected.get("amx_tile"):
        return "AMX: fast bf16 matrix products (training.precision=bf16 can pay off)"
    if flags.get("avx512_bf16") or detected.get("avx512_bf16"):
        return "AVX512-BF16 without AMX: native bf16 dot products"
    if facts["flags"] is None and not any(detected.values()):
        return "unknown"
    return "no bf16 instructions: bf16 is emulated, slower than fp32"


# -- PyAV and FFmpeg's codecs ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MediaCodec:
    """An FFmpeg codec v2a uses: ``needed`` when v2a writes its outputs with it."""

    name: str
    mode: str  # "encoder" or "decoder"
    use: str
    needed: bool = False


MEDIA_CODECS = (
    MediaCodec(name="libx264", mode="encoder", needed=True,
               use="H.264 video (v2a synth; v2a generate when a video cannot be copied)"),
    MediaCodec(name="aac", mode="encoder", needed=True, use="the sound of the .mp4 outputs"),
    MediaCodec(name="pcm_s16le", mode="encoder", needed=True, use=".wav outputs"),
    MediaCodec(name="flac", mode="encoder", needed=True, use=".flac outputs"),
    MediaCodec(name="h264", mode="decoder", needed=True, use="H.264 videos (most .mp4 files)"),
    MediaCodec(name="aac", mode="decoder", needed=True, use="AAC sound (most .mp4 files)"),
    MediaCodec(name="hevc", mode="decoder", use="H.265 videos"),
    MediaCodec(name="mpeg4", mode="decoder", use="MPEG-4 part 2 videos (older .mp4, .avi)"),
    MediaCodec(name="vp9", mode="decoder", use="VP9 videos (.webm)"),
    MediaCodec(name="av1", mode="decoder", use="AV1 videos"),
    MediaCodec(name="mp3", mode="decoder", use="MP3 sound"),
    MediaCodec(name="opus", mode="decoder", use="Opus sound (.opus, .webm)"),
    MediaCodec(name="vorbis", mode="decoder", use="Vorbis sound (.ogg)"),
    MediaCodec(name="flac", mode="decoder", use=".flac sound"),
    MediaCodec(name="pcm_s16le", mode="decoder", use=".wav sound"),
)


def codec_present(codec: MediaCodec) -> bool:
    """Whether PyAV's FFmpeg has ``codec`` under its name (``av.codecs_available``) in its mode."""
    import av
    if codec.name not in av.codecs_available:
        return False
    try:
        found = av.Codec(codec.name, "w" if codec.mode == "encoder" else "r")
    except ValueError:  # av's UnknownCodecError
        return False
    return bool(found.is_encoder if codec.mode == "encoder" else found.is_decoder)


def media_facts() -> dict[str, Any]:
    import av
    libavcodec = av.library_versions.get("libavcodec")
    return {
        "pyav": av.__version__,
        "libavcodec": ".".join(map(str, libavcodec)) if libavcodec else None,
        "codecs": [{**dataclasses.asdict(c), "present": codec_present(c)} for c in MEDIA_CODECS],
    }


# -- v2a's optional extras ------------------------------------------------------------------------

REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*([^;]*?)\s*(?:;(.*))?")
EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
CLAUSE = re.compile(r"\s*(~=|===|==|!=|<=|>=|<|>)\s*([^\s,]+)\s*")


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version: str) -> tuple[int, ...]:
    """The numbers a version starts with (``2.14.1+cu130`` is ``(2, 14, 1)``)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(n) for n in match.group(0).split(".")) if match else ()


def satisfies(version: str, specifier: str) -> bool | None:
    """Whether ``version`` meets ``specifier`` (``>=2.20``, ``==0.2``, ``>=1,<3`` ...), comparing
    release numbers only (pre-release and local labels are ignored); ``None`` when the specifier
    is not one of these simple forms."""
    have = release(version)
    for clause in filter(str.strip, specifier.split(",")):
        match = CLAUSE.fullmatch(clause)
        if match is None or not have:
            return None
        op, wanted_text = match.groups()
        if wanted_text.endswith(".*"):
            prefix = release(wanted_text[:-2])
            same = have[:len(prefix)] == prefix
            ok = same if op == "==" else (not same if op == "!=" else None)
        else:
            wanted = release(wanted_text)
            width = max(len(have), len(wanted))
            a, b = have + (0,) * (width - len(have)), wanted + (0,) * (width - len(wanted))
            ok = {"==": a == b, "===": a == b, "!=": a != b, "<=": a <= b, ">=": a >= b,
                  "<": a < b, ">": a > b,
                  "~=": a >= b and have[:len(wanted) - 1] == wanted[:-1]}[op]
        if ok is None:
            return None
        if not ok:
            return False
    return True


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def extras_facts(distribution: str = "v2a") -> dict[str, Any]:
    """Each optional extra of the installed ``distribution``, from its metadata: the
    requirements it adds, the version of each found here, and whether all are met (an extra
    that names other extras of the same package, as ``all`` does, is met when they are)."""
    metadata = importlib.metadata.metadata(distribution)
    extras: dict[str, dict[str, Any]] = {
        name: {"requirements": [], "extras": [], "installed": True}
        for name in metadata.get_all("Provides-Extra") or []}
    for text in metadata.get_all("Requires-Dist") or []:
        match = REQUIREMENT.fullmatch(text)
        marker = EXTRA_MARKER.search(match.group(4) or "") if match else None
        if marker is None or marker.group(1) not in extras:
            continue  # a base dependency (installed with v2a itself)
        name, inner, specifier = match.group(1), match.group(2), match.group(3).strip()
        extra = extras[marker.group(1)]
        if normalised(name) == normalised(distribution):
            extra["extras"] += [e.strip() for e in (inner or "").split(",") if e.strip()]
            continue
        version = installed_version(name)
        ok = version is not None and satisfies(version, specifier) is not False
        extra["requirements"].append(
            {"name": name, "specifier": specifier, "version": version, "ok": ok})
    for extra in extras.values():
        extra["installed"] = all(r["ok"] for r in extra["requirements"])
    for extra in extras.values():  # then those that name other extras
        extra["installed"] = extra["installed"] and all(
            e in extras and extras[e]["installed"] for e in extra["extras"])
    return extras


# -- plug-ins and a recipe's weights --------------------------------------------------------------


def plugin_facts(registry: Registry) -> dict[str, Any]:
    from v2a.interfaces import KINDS  # deferred: torch, which --help does not need
    from v2a.registry import TRAINING_TASK  # deferred: torch
    counts = {kind: len(registry.names(kind)) for kind in KINDS}
    counts[TRAINING_TASK] = len(registry.training_task_names())
    unusable = [{"kind": kind, "name": name, "status": entry.status}
                for (kind, name), entry in sorted(registry.entries.items())
                if entry.status != "ok"]
    return {"counts": counts, "not_usable": unusable, "problems": list(registry.problems)}


def weights_options(config: Any) -> list[tuple[str, str]]:
    """``(option, value)`` of a component config's weights options: ``weights`` and any
    ``*_weights`` (such as a PCA file), when set to a non-empty text."""
    if config is None or not dataclasses.is_dataclass(config):
        return []
    return [(f.name, getattr(config, f.name)) for f in dataclasses.fields(config)
            if (f.name == "weights" or f.name.endswith("_weights"))
            and isinstance(getattr(config, f.name), str) and getattr(config, f.name).strip()]


def weights_fact(value: str, declared: Callable[[], list] | None = None) -> dict[str, Any]:
    """Where the weights ``value`` comes from (``source``: none, pretrained, path, or a URL's
    scheme) and whether it is here (``state``: ready, missing, download or library), without
    any network (:func:`v2a.weights.cached_file`). ``declared``: the files ``pretrained``
    fetches, as the plug-in declares them (``ComponentSpec.pretrained_files``), when it does."""
    from v2a.weights import (  # deferred: torch, which --help does not need
        PRETRAINED, WeightsError, cached_file, is_random, parse_weights)
    if is_random(value):
        return {"source": "none", "state": "ready", "detail": "random initialisation"}
    if value.strip().lower() == PRETRAINED:
        return pretrained_fact(declared)
    try:
        source = parse_weights(value)
    except WeightsError as exc:
        return {"source": "invalid", "state": "missing", "detail": str(exc).rstrip(".")}
    found = cached_file(value)
    pinned = ", sha256 pinned" if source.sha256 else ""
    if found is not None:
        size = found.stat().st_size
        where = "present" if source.is_local else f"downloaded already ({found})"
        return {"source": source.scheme, "state": "ready", "file": str(found),
                "size_bytes": size, "detail": f"{where}, {human_bytes(size)}{pinned}"}
    if not source.is_local:
        return {"source": source.scheme, "state": "download",
                "detail": f"not downloaded yet: v2a downloads it into {cache_folder()} on "
                          "first use (needs internet)"}
    path = source.local_path()
    return {"source": source.scheme, "state": "missing",
            "detail": "is a folder, not a file" if path.is_dir() else "does not exist"}


def pretrained_fact(declared: Callable[[], list] | None) -> dict[str, Any]:
    """``weights: pretrained``: looked up, offline, in the library's own cache where the plug-in
    declares its files (:class:`v2a.pretrained.PretrainedFile`), else left to the library."""
    fact = {"source": "pretrained", "state": "library",
            "detail": "the plug-in's library downloads it on first use (its plug-in does not say "
                      "where that library keeps it)"}
    if declared is None:
        return fact
    try:
        files = declared()
    except UserError as exc:  # pretrained refused: nobody publishes these weights
        return {**fact, "state": "missing", "source": "invalid", "detail": str(exc).rstrip(".")}
    missing = [f.what for f in files if f.find() is None]
    if not missing:
        return {**fact, "state": "ready", "detail": "in its library's cache"}
    return {**fact, "state": "download",
            "detail": f"not in its library's cache yet: {', '.join(missing)} (`v2a download "
                      "RECIPE` fetches it)"}


def recipe_facts(recipe: Recipe, registry: Registry) -> dict[str, Any]:
    """Every component of ``recipe`` (nested ones included): its plug-in, whether its optional
    libraries are installed, and its weights options (see :func:`weights_fact`)."""
    components = []
    for slot, choice in recipe.all_components():
        spec = registry.get(choice.kind, choice.plugin).spec
        declared = (None if spec.pretrained_files is None
                    else lambda spec=spec, choice=choice: spec.pretrained_files(choice.config))
        weights = [{"option": option, "value": value,
                    **weights_fact(value, declared if option == "weights" else None)}
                   for option, value in weights_options(choice.config)]
        components.append({"slot": slot, "plugin": choice.plugin,
                           "status": registry.get(choice.kind, choice.plugin).status,
                           "weights": weights})
    return {"source": str(recipe.source), "components": components}


# -- the verdict ----------------------------------------------------------------------------------


def problems_of(report: dict[str, Any]) -> list[str]:
    """What is missing, one clause each, in the order of the report."""
    found = [f"PyAV's FFmpeg has no {c['name']} {c['mode']}, which v2a needs for {c['use']}"
             for c in report["media"]["codecs"] if c["needed"] and not c["present"]]
    for component in report.get("recipe", {}).get("components", []):
        slot = component["slot"]
        if component["status"] != "ok":
            found.append(f"{slot} ({component['plugin']}) cannot be built: {component['status']}")
        for w in component["weights"]:
            if w["state"] == "missing" and w["source"] == "invalid":
                found.append(f"{slot}.{w['option']}: {w['detail']}")
            elif w["state"] == "missing":
                found.append(f"{slot}.{w['option']} names {w['value']}, which {w['detail']}")
            elif w["state"] == "download" and w["source"] == "pretrained":
                found.append(f"{slot}.{w['option']} (pretrained) is {w['detail']}")
            elif w["state"] == "download":
                found.append(f"{slot}.{w['option']} is downloaded from {w['value']} on first use")
    return found


def verdict(report: dict[str, Any], problems: list[str]) -> str:
    """The report's last line: one sentence."""
    recipe = report.get("recipe")
    if problems:
        more = f" (and {len(problems) - 1} more above)" if len(problems) > 1 else ""
        subject = f"{recipe['source']} cannot run here offline" if recipe else (
            "this installation lacks what v2a needs")
        return f"{subject}: {problems[0]}{more}."
    if recipe is None:
        return "everything v2a needs is installed."
    subject = recipe["source"]
    library = list(dict.fromkeys(c["slot"] for c in recipe["components"]
                                 for w in c["weights"] if w["state"] == "library"))
    if library:
        return (f"{subject} is ready to run offline once the pretrained weights of "
                f"{', '.join(library)} are in their libraries' caches (the first run downloads "
                "them).")
    return f"{subject} is ready to run offline."


def gather(recipe: Recipe | None, registry: Registry) -> dict[str, Any]:
    """The whole report as plain data (what ``--json`` prints)."""
    report: dict[str, Any] = {
        "v2a": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "torch": torch_facts(),
        "cpu": cpu_facts(),
        "media": media_facts(),
        "extras": extras_facts(),
        "plugins": plugin_facts(registry),
    }
    if recipe is not None:
        report["recipe"] = recipe_facts(recipe, registry)
    problems = problems_of(report)
    report["problems"] = problems
    report["ready"] = not problems
    report["verdict"] = verdict(report, problems)
    return report


# -- as text --------------------------------------------------------------------------------------


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def torch_lines(facts: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("version", facts["version"]), ("build", facts["build"])]
    if facts["cuda_available"]:
        rows.append(("CUDA", f"available, {len(facts['gpus'])} GPU(s)"))
    elif facts["build"].startswith(("CUDA", "ROCm")):
        rows.append(("CUDA", "not available: no GPU is visible to this build (a CPU-only "
                             f"machine needs only the much smaller CPU-only build: {INSTALL_DOCS})"))
    else:
        rows.append(("CUDA", "not available (CPU-only build)"))
    for gpu in facts["gpus"]:
        rows.append((f"GPU {gpu['index']}", f"{gpu['name']}, {human_bytes(gpu['memory_bytes'])}, "
                     f"compute capability {gpu['capability']}, bf16 {yes_no(gpu['bf16'])}"))
    rows.append(("MPS", "available" if facts["mps_available"] else "not available"))
    omp = f", OMP_NUM_THREADS={facts['omp_num_threads']}" if facts["omp_num_threads"] else ""
    rows.append(("threads", f"{facts['threads']} intra-op, {facts['interop_threads']} inter-op "
                            f"({facts['cpu_count']} CPUs{omp})"))
    return rows


def cpu_lines(facts: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("model", f"{facts['model']} ({facts['machine']})"),
            ("torch kernels", facts["torch_capability"])]
    detected = facts["torch_detects"]
    rows.append(("torch detects", ", ".join(f"{k} {yes_no(v)}" for k, v in detected.items())))
    flags = facts["flags"]
    rows.append(("cpuinfo flags", "unknown (no x86 flags in /proc/cpuinfo)" if flags is None
                 else ", ".join(f"{k} {yes_no(v)}" for k, v in flags.items())))
    rows.append(("bf16", cpu_bf16(facts)))
    return rows


def media_lines(facts: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("PyAV", f"{facts['pyav']} (FFmpeg libavcodec {facts['libavcodec'] or 'unknown'})")]
    for c in facts["codecs"]:
        state = "present" if c["present"] else ("MISSING" if c["needed"] else "missing")
        rows.append((f"{c['mode']} {c['name']}", f"{state}: {c['use']}"))
    return rows


def extras_lines(extras: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for name, extra in extras.items():
        parts = [f"{r['name']} {r['version'] or 'not installed'}"
                 + (f" (wants {r['specifier']})" if r["specifier"] and not r["ok"] else "")
                 for r in extra["requirements"]]
        parts += [f"v2a[{e}]" for e in extra["extras"]]
        state = "installed" if extra["installed"] else "not installed"
        rows.append((name, f"{state}: {', '.join(parts)}"))
    return rows


def plugin_lines(facts: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("registered", ", ".join(f"{kind} {n}" for kind, n in facts["counts"].items()))]
    rows += [(f"{c['kind']} {c['name']}", c["status"]) for c in facts["not_usable"]]
    rows += [("problem", problem) for problem in facts["problems"]]
    return rows


def recipe_lines(facts: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for c in facts["components"]:
        status = "" if c["status"] == "ok" else f"; {c['status']}"
        if not c["weights"]:
            rows.append((c["slot"], f"{c['plugin']}, no weights option{status}"))
        for w in c["weights"]:
            label = c["slot"] if w["option"] == "weights" else f"{c['slot']}.{w['option']}"
            shown = w["value"] if w["source"] != "none" else "none"
            rows.append((label, f"{c['plugin']}, weights {shown}: {w['detail']}{status}"))
    return rows


def as_text(report: dict[str, Any]) -> str:
    sections = [
        (f"v2a {report['v2a']} (Python {report['python']}, {report['platform']})", []),
        ("torch", torch_lines(report["torch"])),
        ("CPU", cpu_lines(report["cpu"])),
        ("media", media_lines(report["media"])),
        ("extras (pip install 'v2a[NAME]')", extras_lines(report["extras"])),
        ("plug-ins", plugin_lines(report["plugins"])),
    ]
    if "recipe" in report:
        sections.append((f"recipe {report['recipe']['source']}", recipe_lines(report["recipe"])))
    lines = []
    for title, rows in sections:
        lines.append(title)
        width = max((len(label) for label, _ in rows), default=0)
        lines += [f"  {label.ljust(width)}  {value}" for label, value in rows]
        lines.append("")
    lines.append(report["verdict"])
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from v2a.recipe import is_override, load_recipe, recipe_options  # deferred: torch
    from v2a.registry import default_registry  # deferred: torch (the plug-ins)
    if args.recipe is not None and is_override(args.recipe):
        raise RecipeError(f"{args.recipe} is an override: name the recipe first, as in "
                          f"`v2a doctor RECIPE {args.recipe}`")
    recipe = load_recipe(args.recipe, args.overrides, **recipe_options(args)) if args.recipe else None
    report = gather(recipe, default_registry())
    print(json.dumps(report, indent=2) if args.json else as_text(report))
    return 0 if report["ready"] else 1


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a doctor`` on the CLI's sub-parsers."""
    text = ("check what this machine and installation give v2a (torch build, GPUs, CPU, PyAV "
            "codecs, extras, plug-ins) and, given a recipe, whether it can run here offline")
    p = sub.add_parser("doctor", parents=[common], help="check the installation (and a recipe)",
                       description=text + "; exits 1 when something needed is missing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("recipe", nargs="?", help=RECIPE_HELP)
    p.add_argument("overrides", nargs="*", metavar="key=value|~key",
                   help="recipe overrides (~key removes a key)")
    p.set_defaults(func=run)

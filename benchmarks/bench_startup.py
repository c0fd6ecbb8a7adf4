"""Start-up: what the light commands cost, and where the README's first command spends its time.

Two parts, each command in a fresh interpreter (so every import is paid, as a user pays it):

* **commands**: the wall time of ``v2a --version``, ``v2a --help``, ``v2a generate --help``,
  ``v2a recipe list``, ``v2a recipe check tiny``, ``v2a plugins`` and the README's first command
  ``v2a generate --recipe tiny examples/shapes.mp4 -o DIR`` (median of ``--repeats`` runs), next
  to a bare interpreter and ``import torch`` alone; with whether each imported torch (from one
  extra run under ``python -X importtime``, whose figures are not the wall times shown).
* **phases** of the README's first command, timed inside one fresh interpreter that runs the
  command's own code (:func:`v2a.cli.main`): importing torch, importing the rest of the engine,
  loading the plug-ins (the registry), loading the recipe, building the model
  (:meth:`VideoToAudio.from_recipe`), generating (video decode, sampling and codec decode:
  ``benchmarks/bench_pipeline.py`` splits these further), the output stage and writing the wav
  and mp4. The rest of the command's time (argument parsing, planning, checks) is "other".

    python benchmarks/bench_startup.py             # 5 runs of each command (about 1-2 min)
    python benchmarks/bench_startup.py --quick     # 1 run of the light commands (the test's)

Run it under the shared lock: ``flock /tmp/v2a-bench.lock python benchmarks/bench_startup.py``.
The figures depend on the load: the script prints the CPU model and the load average.

Python's bytecode cache is on in the commands' interpreters, as on a user's machine, whatever
this environment says (``PYTHONDONTWRITEBYTECODE`` is removed from their environment): the
cached bytecode goes to a temporary folder (``PYTHONPYCACHEPREFIX``), so nothing is written into
the working tree, and each command runs once untimed first, so that its modules are compiled
before it is timed (without the cache, compiling v2a's sources cost ~0.3 s of every command).
Only the built-in plug-ins are loaded (``V2A_PLUGINS``) unless ``--all-plugins`` is given: a
third-party plug-in whose module imports torch makes every command that lists plug-ins pay for
torch, which is that plug-in's cost, not v2a's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from v2a.machine import cpu_model  # light: the parent process's imports are not timed

ROOT = Path(__file__).resolve().parent.parent
VIDEO = ROOT / "examples" / "shapes.mp4"
README_COMMAND = ("generate", "--recipe", "tiny", str(VIDEO))

#: The phases' child: runs `v2a generate` through v2a.cli.main with the calls it makes timed.
PHASES = r"""
import json, sys, time
marks = {"start": time.perf_counter()}
import torch
marks["import torch"] = time.perf_counter()
import v2a.cli, v2a.commands.generating as generating
marks["import v2a"] = time.perf_counter()
from v2a.registry import default_registry
default_registry()
marks["plug-ins"] = time.perf_counter()
spent = {}
def timed(name, call):
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - began
    return wrapper
model_class = generating.VideoToAudio
model_class.from_recipe = classmethod(timed("build", model_class.from_recipe.__func__))
model_class.generate = timed("generate", model_class.generate)
generating.load_recipe = timed("recipe", generating.load_recipe)
generating.apply_output_stage = timed("output stage", generating.apply_output_stage)
generating.write_outputs = timed("write wav + mp4", generating.write_outputs)
code = v2a.cli.main(json.loads(sys.argv[1]))
marks["command"] = time.perf_counter()
print(json.dumps({"code": code, "marks": marks, "spent": spent}))
"""


def machine_line() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; load average {load}"


def v2a_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "v2a", *args]


def builtin_entry_points() -> list[str]:
    """The names of the ``v2a`` distribution's own entry points (group ``v2a``)."""
    import importlib.metadata

    return sorted(ep.name for ep in importlib.metadata.entry_points(group="v2a")
                  if ep.dist is not None and ep.dist.name == "v2a")


def child_environment(pycache: Path, *, all_plugins: bool) -> dict[str, str]:
    """The commands' environment: this one with Python's bytecode cache on, kept in ``pycache``,
    and (unless ``all_plugins``) only the built-in plug-ins loaded: a third-party plug-in
    installed here whose module imports torch at its top would time itself."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    if not all_plugins:
        env["V2A_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        env["V2A_PLUGINS"] = ",".join(builtin_entry_points())
    return env


ENV: dict[str, str] = dict(os.environ)  # set by main() to child_environment(...)


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=ENV)


def wall(argv: list[str], repeats: int) -> float:
    """Median wall seconds of ``argv`` over ``repeats`` runs after an untimed one (which writes
    the bytecode cache); output discarded; a failure stops the benchmark."""
    times = []
    for attempt in range(repeats + 1):
        began = time.perf_counter()
        done = run(argv)
        if attempt:
            times.append(time.perf_counter() - began)
        if done.returncode not in (0, 2):  # bare `v2a` exits 2 by design
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return statistics.median(times)


def imports_torch(argv: list[str]) -> tuple[bool, float]:
    """Whether ``argv`` (a ``python ...`` command) imports torch, and its total import time (s),
    from ``-X importtime``."""
    done = run([argv[0], "-X", "importtime", *argv[1:]])
    rows = [line.split("|") for line in done.stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2]
    names = {row[2].strip() for row in rows[1:]}
    top = sum(int(row[1]) for row in rows[1:] if not row[2].startswith("  "))
    return "torch" in names, top / 1e6


def commands_table(repeats: int, quick: bool, out: Path) -> list[str]:
    cases = [
        ("python -c pass (the interpreter)", [sys.executable, "-c", "pass"]),
        ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
        ("v2a --version", v2a_argv("--version")),
        ("v2a --help", v2a_argv("--help")),
        ("v2a generate --help", v2a_argv("generate", "--help")),
        ("v2a recipe list", v2a_argv("recipe", "list")),
    ]
    if not quick:
        cases += [
            ("v2a recipe check tiny", v2a_argv("recipe", "check", "tiny")),
            ("v2a recipe check maskvat_hybrid", v2a_argv("recipe", "check", "maskvat_hybrid")),
            ("v2a recipe show maskvat_hybrid", v2a_argv("recipe", "show", "maskvat_hybrid")),
            ("v2a plugins", v2a_argv("plugins")),
            ("v2a generate --recipe tiny examples/shapes.mp4 -o DIR",
             v2a_argv(*README_COMMAND, "-o", str(out / "readme"), "--overwrite")),
        ]
    lines = ["| command | wall (s, median of %d) | imports torch | import time (s) |" % repeats,
             "|---|---:|:---:|---:|"]
    for label, argv in cases:
        seconds = wall(argv, repeats)
        torch_loaded, import_seconds = imports_torch(argv)
        lines.append(f"| `{label}` | {seconds:.2f} | {'yes' if torch_loaded else 'no'} | "
                     f"{import_seconds:.2f} |")
    return lines


def phases_table(out: Path) -> list[str]:
    argv = [*README_COMMAND, "-o", str(out / "phases"), "--overwrite"]
    began = time.perf_counter()
    done = run([sys.executable, "-c", PHASES, json.dumps(argv)])
    total = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"the phases run failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    marks, spent = result["marks"], result["spent"]
    rows = [("interpreter start and exit", total - (marks["command"] - marks["start"])),
            ("import torch", marks["import torch"] - marks["start"]),
            ("import v2a (the engine, the commands)", marks["import v2a"] - marks["import torch"]),
            ("plug-ins (registry: every entry point)", marks["plug-ins"] - marks["import v2a"])]
    command = marks["command"] - marks["plug-ins"]
    for name in ("recipe", "build", "generate", "output stage", "write wav + mp4"):
        rows.append((name, spent.get(name, 0.0)))
    rows.append(("other (parsing, planning, checks)", command - sum(spent.values())))
    lines = ["| phase of the README's first command | seconds | share |", "|---|---:|---:|"]
    lines += [f"| {name} | {seconds:.2f} | {100 * seconds / total:.0f} % |"
              for name, seconds in rows]
    lines.append(f"| **total (wall, one run)** | **{total:.2f}** | 100 % |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one run of the light commands only, no phases (what the test runs)")
    parser.add_argument("--repeats", type=int, help="runs of each command (default 5; quick 1)")
    parser.add_argument("--all-plugins", action="store_true",
                        help="load every installed plug-in, not only the built-ins")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    print(machine_line())
    print(f"python {platform.python_version()}; each command in a fresh interpreter, bytecode "
          "cache on (written by an untimed first run), "
          f"{'every installed plug-in' if args.all_plugins else 'the built-in plug-ins only'}\n")
    global ENV
    with tempfile.TemporaryDirectory(prefix="v2a-bench-startup-") as folder:
        out = Path(folder)
        ENV = child_environment(out / "pycache", all_plugins=args.all_plugins)
        print("\n".join(commands_table(repeats, args.quick, out)))
        if not args.quick:
            print()
            print("\n".join(phases_table(out)))
    print(f"\n{machine_line()} (at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``v2a plugins [KIND NAME] [--json]``: the installed components, or one component's options."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from v2a.errors import UserError
from v2a.log import note, warn

if TYPE_CHECKING:
    from v2a.recipe import OptionDoc
    from v2a.registry import Registry


class UsageError(UserError):
    """A command line that names too little (exit code 2, as argparse's own usage errors)."""

    exit_code = 2


def run(args: argparse.Namespace) -> int:
    from v2a.registry import default_registry  # deferred: the plug-ins, not for --help
    registry = default_registry()
    if args.kind or args.name:
        return show_options(registry, args.kind, args.name)
    rows = list(registry.rows())
    if args.json:
        print(json.dumps({"components": rows, "problems": registry.problems}, indent=2))
        return 0
    columns = ("kind", "name", "provider", "version", "status")
    if not rows:
        print("no plug-ins are loaded (is V2A_DISABLE_PLUGIN_AUTOLOAD set?)")
    else:
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns[:-1]}
        print("  ".join(c.ljust(widths[c]) for c in columns[:-1]) + "  status")
        for row in rows:
            print("  ".join(row[c].ljust(widths[c]) for c in columns[:-1]) + "  " + row["status"])
    for problem in registry.problems:
        warn(problem)
    return 0


def show_options(registry: Registry, kind: str | None, name: str | None) -> int:
    if not (kind and name):
        raise UsageError("give both a kind and a name, e.g. `v2a plugins reranker none`")
    from v2a.recipe import dataclass_doc  # deferred: v2a.registry, not for --help
    from v2a.registry import TRAINING_TASK  # deferred: pluggy, which --help does not need
    if kind == TRAINING_TASK:
        return show_training_task(registry, name)
    entry = registry.get(kind, name)
    print(f"{kind} {name!r} from {entry.plugin.label}: {entry.spec.description or '-'}")
    print(f"status: {entry.status}")
    if entry.spec.config is None:
        print("no options")
        return 0
    rows = dataclass_doc(entry.spec.config)
    print("\n".join(option_lines(rows)))
    undocumented = [row.name for row in rows if not row.help]
    if undocumented:
        note(f"{kind} {name!r} documents no help for {', '.join(undocumented)} (an option's help "
             f"is the docstring under its field: docs/writing-a-plugin.md)")
    return 0


def option_lines(rows: list[OptionDoc]) -> list[str]:
    """What ``v2a plugins KIND NAME`` prints of a config's options: name, type and default on a
    line, the help (when there is one) indented below."""
    name_width = max(len(row.name) for row in rows)
    type_width = max(len(row.type) for row in rows)
    lines = ["options (types and defaults as a recipe writes them):"]
    for row in rows:
        lines.append(f"  {row.name.ljust(name_width)}  {row.type.ljust(type_width)}  "
                     f"default {row.default}")
        if row.help:
            lines.append(f"      {row.help}")
    return lines


def show_training_task(registry: Registry, name: str) -> int:
    """``v2a plugins training_task NAME``: who provides it and the files a run exports."""
    from v2a.registry import TRAINING_TASK  # deferred: pluggy, which --help does not need
    spec = registry.training_task(name)
    plugin = registry.training_tasks[name].plugin
    print(f"{TRAINING_TASK} {name!r} from {plugin.label}: {spec.description or '-'}")
    print("trains and exports (in the run folder):")
    width = max(len(slot) for slot in spec.export_files)
    for slot, file in spec.export_files.items():
        when = "  (when the recipe has one to train)" if slot in spec.optional_exports else ""
        print(f"  {slot.ljust(width)}  {file}{when}")
    return 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a plugins`` on the CLI's sub-parsers."""
    p = sub.add_parser("plugins", parents=[common], help="list the installed components")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("kind", nargs="?", help="with NAME: show that component's recipe options")
    p.add_argument("name", nargs="?", help="the component's name")
    p.set_defaults(func=run)

"""The ``v2a`` command line.

Every sub-command is a function ``cmd_<name>(args) -> int``. Errors a user can cause are
:class:`~v2a.errors.UserError`\\ s: they print one sentence and exit non-zero (2 for a bad
recipe or command line); ``--verbose`` adds the traceback. Other exceptions are bugs and keep
their traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from v2a import __version__
from v2a.errors import UserError, user_facing_message


def cmd_plugins(args: argparse.Namespace) -> int:
    from v2a.registry import default_registry

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
        print(f"warning: {problem}", file=sys.stderr)
    return 0


def show_options(registry, kind: str | None, name: str | None) -> int:
    from v2a.recipe import dataclass_doc

    if not (kind and name):
        raise UserError("give both a kind and a name, e.g. `v2a plugins reranker none`")
    entry = registry.get(kind, name)
    print(f"{kind} {name!r} from {entry.plugin.label}: {entry.spec.description or '-'}")
    print(f"status: {entry.status}")
    if entry.spec.config is None:
        print("no options")
        return 0
    rows = dataclass_doc(entry.spec.config)
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    print("options:")
    for key, type_, default in rows:
        print(f"  {key.ljust(widths[0])}  {type_.ljust(widths[1])}  default {default}")
    return 0


def cmd_recipe_show(args: argparse.Namespace) -> int:
    from v2a.recipe import load_recipe, recipe_options

    options = recipe_options(args)
    recipe = load_recipe(args.recipe, args.overrides, **options)
    given = [*args.overrides, *(["--random-weights"] if options["random_weights"] else [])]
    print(f"# {recipe.source}" + (f" with {' '.join(given)}" if given else ""))
    print(recipe.to_yaml(), end="")
    return 0


def cmd_recipe_check(args: argparse.Namespace) -> int:
    from v2a.recipe import load_recipe, recipe_options
    from v2a.registry import default_registry

    recipe = load_recipe(args.recipe, args.overrides, **recipe_options(args), check_weights=True)
    registry = default_registry()
    for slot, choice in recipe.all_components():
        status = registry.get(choice.kind, choice.plugin).status
        if status != "ok":
            print(f"note: {slot} ({choice.plugin}) cannot be built here: {status}", file=sys.stderr)
        weights = choice.options.get("weights")
        if isinstance(weights, str) and weights.lower() not in ("none", "pretrained"):
            if not Path(weights).expanduser().is_file():
                print(f"note: {slot}.weights names {weights}, which does not exist yet",
                      file=sys.stderr)
    base = "; a base recipe, to be extended rather than run" if recipe.base else ""
    print(f"{recipe.source}: ok ({len(recipe.components)} components{base})")
    return 0


def cmd_recipe_list(args: argparse.Namespace) -> int:
    from v2a.recipe import catalogue

    entries = catalogue()
    width = max((len(e.name) for e in entries), default=0)
    for entry in entries:
        tag = "[base] " if entry.base else ""
        print(f"{entry.name:{width}s}  {tag}{entry.description}".rstrip())
    if any(e.base for e in entries):
        print("[base]: meant to be extended by other recipes, not run")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from v2a.interfaces import Fittable
    from v2a.media import AUDIO_SUFFIXES, VIDEO_SUFFIXES, load_audio, media_files
    from v2a.recipe import is_override, load_recipe, recipe_options
    from v2a.weights import save_state

    files = [a for a in args.inputs if not is_override(a)]
    overrides = [a for a in args.inputs if is_override(a)] + list(args.overrides)
    recipe = load_recipe(args.recipe, overrides, **recipe_options(args))
    choice = recipe.choice(args.slot)
    output = Path(args.output)
    if output.suffix != ".safetensors":
        raise UserError(f"the output {output} must end in .safetensors")
    if output.exists() and not args.overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it")
    paths = media_files(files, AUDIO_SUFFIXES + VIDEO_SUFFIXES)
    if not paths:
        raise UserError("no audio or video files were given to fit on")
    component = recipe.build(args.slot)
    if not isinstance(component, Fittable):
        raise UserError(f"{args.slot} ({choice.plugin}) has no fit method; it cannot be fitted to data")
    wavs = (
        load_audio(p, sample_rate=component.sample_rate)
        for p in tqdm(paths, desc=f"fitting {choice.plugin}", unit="file")
    )
    stats = component.fit(wavs)
    save_state(component.state_dict(), output, metadata={"plugin": choice.plugin, "slot": args.slot})
    for key, value in (stats or {}).items():
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    print(f"wrote {output}; use it with {args.slot}.weights={output}")
    return 0


def add_recipe_arguments(p: argparse.ArgumentParser, overrides_help: str = "recipe overrides") -> None:
    """The ``RECIPE [key=value ...]`` arguments every command that reads a recipe takes."""
    p.add_argument("recipe", help="a recipe file, or the name of a built-in recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value|~key",
                   help=overrides_help + " (~key removes a key)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
        help="show the full traceback of errors",
    )
    common.add_argument(  # read by the commands that load a recipe (v2a.recipe.recipe_options)
        "--random-weights", action="store_true", default=argparse.SUPPRESS,
        help="recipe commands: set every component's weights to none (random; nothing is downloaded)",
    )
    common.add_argument(
        "--allow-env", action="store_true", default=argparse.SUPPRESS,
        help="recipe commands: let ${oc.env:NAME} in the recipe read environment variables",
    )
    parser = argparse.ArgumentParser(
        prog="v2a", parents=[common],
        description="Video-to-audio generation: plug-ins, recipes, training and generation.",
    )
    parser.add_argument("--version", action="version", version=f"v2a {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("plugins", parents=[common], help="list the installed components")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("kind", nargs="?", help="with NAME: show that component's recipe options")
    p.add_argument("name", nargs="?", help="the component's name")
    p.set_defaults(func=cmd_plugins)

    recipe = sub.add_parser("recipe", parents=[common], help="show, check or list recipes")
    rsub = recipe.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    for name, func, text in (
        ("show", cmd_recipe_show, "print the resolved recipe with every default filled in"),
        ("check", cmd_recipe_check, "validate a recipe without building anything"),
    ):
        p = rsub.add_parser(name, parents=[common], help=text, description=text)
        add_recipe_arguments(p)
        p.set_defaults(func=func)
    p = rsub.add_parser("list", parents=[common], help="list the built-in recipes")
    p.set_defaults(func=cmd_recipe_list)

    p = sub.add_parser(
        "fit", parents=[common], help="fit a component (e.g. a light codec) to your own audio",
        description="Fit the component in SLOT of RECIPE to audio or video files (or folders) "
        "and save its weights as safetensors.",
    )
    p.add_argument("recipe", help="a recipe file, or the name of a built-in recipe")
    p.add_argument("slot", help="the component slot, e.g. codec")
    p.add_argument("inputs", nargs="+", metavar="FILE|FOLDER|key=value",
                   help="media files or folders to fit on, and recipe overrides")
    p.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_fit, overrides=[])  # overrides after the options land here

    # the commands that live beside the machinery they drive
    from v2a.cache import add_extract_command
    from v2a.data import add_manifest_command
    from v2a.synth import add_synth_command
    from v2a.train import add_train_command

    add_manifest_command(sub, common)
    add_extract_command(sub, common)
    add_train_command(sub, common)
    add_synth_command(sub, common)
    from v2a.generate import add_generate_command

    add_generate_command(sub, common)
    from v2a.evaluate import add_evaluate_command

    add_evaluate_command(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling `key=value ...` at the first option: collect the ones after it
    if extra:
        from v2a.recipe import is_override

        overrides = [a for a in extra if is_override(a)]
    else:
        overrides = []
    if extra and (len(overrides) < len(extra) or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if overrides:
        args.overrides = list(args.overrides) + overrides
    verbose = getattr(args, "verbose", False)
    try:
        return args.func(args) or 0
    except UserError as exc:
        if verbose:
            traceback.print_exc()
        print(f"v2a: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("v2a: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 (translated at the boundary, or re-raised)
        message = user_facing_message(exc)
        if message is None:
            raise  # a bug: keep the traceback
        if verbose:
            traceback.print_exc()
        print(f"v2a: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``v2a`` command line.

The sub-commands live in :mod:`v2a.commands`, one module each; this module only assembles
the parser and runs the chosen command. Errors a user can cause are
:class:`~v2a.errors.UserError`\\ s: they print one sentence and exit non-zero (2 for a bad
recipe or command line, 1 otherwise); ``--verbose`` adds the traceback. Other exceptions are
bugs and keep their traceback. The exit codes are :data:`EXIT_CODES` (``v2a --help`` prints
them); bare ``v2a`` lists the commands and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from v2a import __version__
from v2a.commands import COMMANDS
from v2a.errors import UserError, user_facing_message
from v2a.log import show_on_stderr


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
        prog="v2a", parents=[common], epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Video-to-audio generation: plug-ins, recipes, training and generation.",
    )
    parser.add_argument("--version", action="version", version=f"v2a {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_command(sub, common)
    return parser


EXIT_CODES = """exit codes:
  0    it worked
  1    a run-time error (a missing file, a failed download, a model that does not load)
  2    a usage or recipe error (a bad option, argument or recipe; a plug-in that cannot be used)
  130  interrupted (Ctrl-C)

`v2a COMMAND --help` describes a command."""


def command_list(parser: argparse.ArgumentParser) -> str:
    """The commands of ``parser``, one line each with its help, in :data:`COMMANDS` order."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    listed = sub._choices_actions  # one per command, holding the help text it was added with
    width = max(len(action.dest) for action in listed)
    return "\n".join(f"  {action.dest.ljust(width)}  {action.help or ''}".rstrip()
                     for action in listed)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:  # bare `v2a`: what it can do, as a usage error
        print(f"{parser.format_usage()}\ncommands:\n{command_list(parser)}\n\n"
              f"`v2a --help` says more, and the exit codes.", file=sys.stderr)
        return 2
    # argparse stops filling `key=value ...` at the first option: collect the ones after it
    overrides = []
    if extra:
        from v2a.recipe import is_override  # deferred: torch (v2a.recipe.compose's config)
        overrides = [a for a in extra if is_override(a)]
    if extra and (len(overrides) < len(extra) or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if overrides:
        args.overrides = list(args.overrides) + overrides
    verbose = getattr(args, "verbose", False)
    show_on_stderr()
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
    except BrokenPipeError:  # `v2a plugins | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 0
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

"""The sub-commands of ``v2a``, one module each.

A command module parses nothing itself: ``add_command(sub, common)`` registers its sub-parser
(``common`` carries ``--verbose``, ``--random-weights`` and ``--allow-env``) and sets
``func`` to the function that runs it, ``(args) -> exit code``. That function turns the
arguments into a call of the engine below (``v2a.generate``, ``v2a.training``, ...) and prints
what the user reads. Engines never import commands; :mod:`v2a.cli` assembles the parser from
:data:`COMMANDS`, in the order ``v2a --help`` lists them.
"""

from __future__ import annotations

from v2a.commands import (
    demo,
    doctor,
    download,
    evaluate,
    export,
    extract,
    fit,
    generate,
    manifest,
    plugins,
    push,
    recipe,
    synth,
    train,
)

COMMANDS = (plugins, recipe, fit, manifest, extract, train, synth, generate, evaluate, export,
            push, demo, download, doctor)

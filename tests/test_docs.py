"""The docs stay true: every recipe field is documented, the README's test command is CI's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from v2a.recipe import SECTIONS, dataclass_doc

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("section", list(SECTIONS))
def test_recipes_reference_lists_every_field(section):
    text = (ROOT / "docs" / "recipes.md").read_text()
    part = re.split(r"\n#+ ", text.split(f"### `{section}`", 1)[1], maxsplit=1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", part, flags=re.M))
    fields = {name for name, _, _ in dataclass_doc(SECTIONS[section])}
    assert documented == fields


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:sh|bash)\n(.*?)```", text, flags=re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_starts_with_two_commands_and_ci_runs_the_second():
    commands = readme_commands()
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci


def test_the_readme_and_results_give_the_same_retraining_commands():
    readme = (ROOT / "README.md").read_text().split("## Retraining the tiny model", 1)[1]
    commands = re.search(r"```\n(.*?)```", readme, flags=re.S).group(1)
    assert commands.count("\n") == 5 and "v2a train recipes/tiny.yaml" in commands
    assert commands in (ROOT / "docs" / "results.md").read_text()

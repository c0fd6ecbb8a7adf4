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
    fields = {row.name for row in dataclass_doc(SECTIONS[section])}
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


# -- the `console` examples of the recipe docs run as written, on the shipped recipes -------------

#: Docs whose ``console`` blocks are ``v2a recipe ...`` commands with the output they give.
EXAMPLE_DOCS = ("recipes.md", "writing-a-plugin.md")


def doc_examples() -> list[tuple[str, str, list[str]]]:
    """``(doc, command, expected output lines)`` of every ``console`` block of the docs above."""
    examples: list[tuple[str, str, list[str]]] = []
    for doc in EXAMPLE_DOCS:
        text = (ROOT / "docs" / doc).read_text()
        for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                if line.startswith("$ "):
                    examples.append((doc, line[2:], []))
                else:
                    examples[-1][2].append(line)
    return examples


def matches(expected: list[str], actual: list[str]) -> bool:
    """``actual`` holds the ``expected`` lines in order, a ``...`` line standing for any lines
    (none included); without one, exactly those lines."""
    pattern = "".join(".*?" if line == "..." else re.escape(line + "\n") for line in expected)
    return re.fullmatch(pattern, "".join(line + "\n" for line in actual), flags=re.S) is not None


@pytest.mark.parametrize("doc, command, expected", doc_examples(),
                         ids=[f"{d}: {c}" for d, c, _ in doc_examples()])
def test_the_docs_examples_give_what_the_docs_show(doc, command, expected, capsys, monkeypatch):
    import shlex

    from v2a.cli import main
    from v2a.registry import default_registry

    if "mulaw" in command and "mulaw" not in default_registry().names("codec"):
        pytest.skip("the example plug-in (docs/examples/v2a-mulaw-codec) is not installed")
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("V2A_RECIPE_ALLOW_ENV", raising=False)
    argv = shlex.split(command)
    assert argv[:2] == ["v2a", "recipe"]
    code = main(argv[1:])
    out, err = capsys.readouterr()
    if expected and expected[0].startswith("v2a: error: "):
        assert (code, out, err.strip()) == (2, "", "\n".join(expected))
    else:
        assert code == 0, err
        assert matches(expected, out.splitlines()), out


def test_the_docs_show_the_swaps_the_issue_names():
    """The documented swaps are examples that run (above), not prose."""
    commands = [c for _, c, _ in doc_examples()]
    for swap in ("codec=encodec", "codec=components/codecs/encodec_24khz.yaml", "codec=mulaw",
                 "visual_encoders.extra=clip", "visual_encoders.s3d=null", "--random-weights"):
        assert any(swap in c for c in commands), swap


def test_every_test_the_reliability_page_cites_exists():
    """docs/reliability.md names the tests that show each guarantee: they must exist."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    cited = set(re.findall(r"\b(test_[a-z0-9_]+)\b", text)) - {
        p.stem for p in (ROOT / "tests").rglob("test_*.py")}  # file names are cited too
    defined = {name for p in (ROOT / "tests").rglob("test_*.py")
               for name in re.findall(r"^def (test_[a-z0-9_]+)", p.read_text(), flags=re.M)}
    assert cited and cited <= defined, sorted(cited - defined)

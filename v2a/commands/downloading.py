"""What ``v2a download`` does with its parsed arguments (:mod:`v2a.commands.download` holds
the parser and says what is fetched; ``--help`` builds it without importing torch)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from v2a.commands.download import LIBRARY_ONLY
from v2a.commands.doctor import human_bytes, weights_options
from v2a.commands.evaluate import model_options
from v2a.downloads import file_digest
from v2a.errors import UserError
from v2a.evaluate.models import ModelChoice, model_choice, visual_model_choice
from v2a.evaluate.options import Options
from v2a.evaluate.selection import asked_metrics
from v2a.pretrained import PretrainedFile, checksum_matches
from v2a.recipe import ComponentChoice, Recipe, load_recipe, recipe_options
from v2a.registry import Registry, default_registry
from v2a.weights import PRETRAINED, cached_file, is_random, parse_weights, resolve_file


@dataclass(kw_only=True)
class Needed:
    """One thing to fetch: a declared :class:`PretrainedFile` (``file``) or a weights value
    naming a file (``value``), with the slots that need it."""

    slots: list[str]
    what: str
    file: PretrainedFile | None = None
    value: str | None = None

    @property
    def key(self) -> str:
        return self.file.source if self.file is not None else f"weights {self.value}"


@dataclass(kw_only=True)
class Plan:
    """What a recipe needs: the files, and one sentence for each component that has nothing v2a
    can fetch (``notes``: said, not a problem) or cannot be looked at (``problems``)."""

    needed: dict[str, Needed] = field(default_factory=dict)
    notes: list[tuple[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def add(self, slot: str, item: Needed) -> None:
        if item.key in self.needed:
            self.needed[item.key].slots.append(slot)
        else:
            self.needed[item.key] = item


# -- what is needed --------------------------------------------------------------------------------


def plan_component(plan: Plan, slot: str, choice: ComponentChoice, registry: Registry) -> None:
    """Add what component ``choice`` in ``slot`` needs to ``plan``."""
    entry = registry.get(choice.kind, choice.plugin)
    label = f"{slot} ({choice.plugin})"
    if entry.status != "ok":
        plan.problems.append((label, f"cannot be built here: {entry.status}"))
        return
    pretrained = False
    for option, value in weights_options(choice.config):
        if is_random(value):
            continue
        if value.strip().lower() == PRETRAINED:
            pretrained = True
            continue
        what = f"the {option} file of {choice.plugin}"
        plan.add(label, Needed(slots=[label], what=what, value=value))
    declare = entry.spec.pretrained_files
    if declare is None:
        if pretrained:
            plan.notes.append((label, f"weights pretrained: {LIBRARY_ONLY}"))
        return
    try:
        files = declare(choice.config)
    except UserError as exc:
        plan.problems.append((label, str(exc).rstrip(".")))
        return
    for file in files:
        plan.add(label, Needed(slots=[label], what=file.what, file=file))


def evaluation_models(recipe: Recipe, registry: Registry, args: argparse.Namespace
                      ) -> list[tuple[str, ModelChoice]]:
    """``(label, model)`` of every model ``v2a evaluate`` builds for the chosen metrics that is
    not the recipe's own component (those are planned with the recipe)."""
    # with a reference, as a real evaluation has one: its default metrics are then the default
    # set (without one, v2a evaluate lists every reference-free metric, most of them skipped)
    options = Options(generated=Path("."), reference=Path("."), recipe_options=recipe_options(args),
                      metrics=_names(args.metrics), protocol=args.protocol,
                      models=model_options(args.model))
    metrics, _ = asked_metrics(options, registry)
    found: dict[tuple[str, str], tuple[str, ModelChoice]] = {}
    for metric in metrics:
        for plugin in (metric.plugin, metric.video_plugin):
            if plugin is None or plugin in found or plugin[1] not in registry.names(plugin[0]):
                continue  # evaluate skips a metric whose plug-in is not installed
            kind, name = plugin
            if kind == "visual_encoder":
                model = visual_model_choice(name, registry=registry, options=options,
                                            recipe=recipe)
            else:
                model = model_choice(kind, name, registry=registry, options=options,
                                     recipe=recipe)
            if not model.from_recipe:
                found[plugin] = (f"evaluate {metric.name}", model)
    return list(found.values())


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def plan_for(recipe: Recipe, registry: Registry, args: argparse.Namespace) -> Plan:
    plan = Plan()
    for slot, choice in recipe.all_components():
        plan_component(plan, slot, choice, registry)
    if not args.no_evaluation:
        for label, model in evaluation_models(recipe, registry, args):
            plugin = model.choice.plugin
            weights = getattr(model.choice.config, "weights", None)
            if isinstance(weights, str) and is_random(weights):
                note = (f"{label} ({plugin})", (
                    f"weights none, so v2a evaluate skips it; give --model {plugin}.weights=FILE "
                    "(or =pretrained where its library downloads them) to fetch its weights"))
                # (with --random-weights evaluate runs it as it is: nothing to say); a plug-in's
                # two towers (imagebind) say it once
                if not recipe_options(args)["random_weights"] and note not in plan.notes:
                    plan.notes.append(note)
                continue
            plan_component(plan, label, model.choice, registry)
    return plan


# -- finding, fetching, checking -------------------------------------------------------------------


@dataclass(kw_only=True)
class Outcome:
    """What became of one :class:`Needed`: the local ``path`` (None: missing), whether it was
    fetched now, the checksum's state in words, and a ``problem`` sentence when it failed."""

    path: Path | None
    fetched: bool = False
    checksum: str = ""
    problem: str | None = None


def checksum_text(item: Needed, path: Path | None, *, check_file: bool) -> tuple[str, str | None]:
    """The checksum's state in words, and a problem sentence when the file has another."""
    if item.value is not None:
        source = parse_weights(item.value)
        if source.sha256 is None:
            return "sha256 not pinned", None
        if path is None:
            return f"sha256 pinned ({source.sha256[:12]}…)", None
        if not check_file:  # resolve_file checked it as it fetched it
            return "sha256 matches the pinned one", None
        got = checksum_of(path)
        if got != source.sha256:
            return "sha256 differs", (f"{path} has SHA-256 {got}, not the pinned {source.sha256}; "
                                      "give the file the sha256 belongs to, or correct the sha256")
        return "sha256 matches the pinned one", None
    published = item.file.sha256
    if published is None:
        return "sha256 not published", None
    shown = published if len(published) < 64 else published[:12] + "…"
    if path is None or path.is_dir():
        return f"sha256 published ({shown})", None
    matches, got = checksum_matches(item.file, path)
    if not matches:
        return "sha256 differs", (f"{path} has SHA-256 {got}, not the published {shown}, so it is "
                                  "damaged or not the published file")
    return f"sha256 matches the published {shown}", None


def checksum_of(path: Path) -> str:
    return file_digest(path).removeprefix("sha256:")


def find(item: Needed) -> Path | None:
    if item.file is not None:
        return item.file.find()
    return cached_file(item.value)


def source_text(item: Needed) -> str:
    """Where ``item`` comes from, in words."""
    return item.file.source if item.file is not None else parse_weights(item.value).location


def fetch(item: Needed) -> Path:
    if item.file is not None:
        return item.file.fetch()
    return resolve_file(item.value, what=", ".join(item.slots))


def settle(item: Needed, *, check: bool) -> Outcome:
    """Find ``item`` (and, unless ``check``, fetch it when missing), then check its checksum;
    a fetched or cached file that has another checksum than the published one is removed."""
    path = find(item)
    fetched = False
    if path is None and not check:
        print(f"fetching {item.what} from {source_text(item)} ...", file=sys.stderr, flush=True)
        try:
            path, fetched = fetch(item), True
        except UserError as exc:
            return Outcome(path=None, problem=str(exc).rstrip("."))
    if path is None:
        return Outcome(path=None, checksum=checksum_text(item, None, check_file=False)[0])
    # a pinned weights value was checked by resolve_file when fetched; a declared file is
    # checked here, whether it was fetched now or found
    words, problem = checksum_text(item, path, check_file=not fetched)
    if problem is not None and item.file is not None and not check:
        remove_bad(path)
        problem += "; it was removed from the cache, run the command again to download it anew"
    return Outcome(path=path, fetched=fetched, checksum=words, problem=problem)


def remove_bad(path: Path) -> None:
    """Remove a file whose content is not the published one (a cache's link and the blob it
    points to, for the Hugging Face cache)."""
    target = path.resolve()
    path.unlink(missing_ok=True)
    if target != path:
        target.unlink(missing_ok=True)


# -- as text ---------------------------------------------------------------------------------------


def size_text(item: Needed, path: Path | None) -> str:
    if path is not None and path.is_file():
        return human_bytes(path.stat().st_size)
    if path is not None:
        return "a folder"
    if item.file is not None and item.file.size is not None:
        return human_bytes(item.file.size)
    return "size unknown"


def where_text(item: Needed, outcome: Outcome) -> str:
    if outcome.path is not None:
        return f"{'downloaded to' if outcome.fetched else 'present:'} {outcome.path}"
    source = parse_weights(item.value) if item.value is not None else None
    if source is not None and source.is_local:
        return f"missing: {source.local_path().absolute()} does not exist"
    return f"missing, from {source_text(item)}"


def line(item: Needed, outcome: Outcome) -> str:
    text = (f"{', '.join(item.slots)}: {item.what}; {size_text(item, outcome.path)}; "
            f"{where_text(item, outcome)}")
    if outcome.checksum:
        text += f"; {outcome.checksum}"
    if outcome.problem is not None:
        text += f"\n    {outcome.problem}."
    return text


def verdict(recipe: Recipe, plan: Plan, outcomes: list[tuple[Needed, Outcome]]
            ) -> tuple[str, bool]:
    """The last line (one sentence) and whether everything needed is here."""
    missing = [item for item, o in outcomes if o.path is None and o.problem is None]
    failed = [item for item, o in outcomes if o.problem is not None]
    subject = str(recipe.source)
    if plan.problems or failed:
        names = [label for label, _ in plan.problems] + [", ".join(i.slots) for i in failed]
        return f"{subject}: {', '.join(names)} failed (see above).", False
    if missing:
        local = [i for i in missing if i.file is None and parse_weights(i.value).is_local]
        names = "; ".join(f"{', '.join(i.slots)}: {i.what}" for i in missing)
        todo = ([f"put the {len(local)} local file(s) in place or change their weights values"]
                if local else [])
        if len(local) < len(missing):
            todo.append("run `v2a download` without --check on a machine with internet")
        return (f"{subject} is missing {len(missing)} file(s) ({names}): "
                f"{' and '.join(todo)}.", False)
    remote = [item for item, _ in outcomes
              if item.file is not None or not parse_weights(item.value).is_local]
    if not remote:
        local = f": its {len(outcomes)} weights file(s) are local and present" if outcomes else ""
        return f"{subject} needs nothing downloaded{local}.", True
    fetched = sum(o.fetched for _, o in outcomes)
    done = f"{fetched} downloaded now, " if fetched else ""
    return f"{subject} has all {len(outcomes)} file(s) it needs here ({done}none missing).", True


def run_download(args: argparse.Namespace) -> int:
    """Run ``v2a download`` with its parsed arguments; the exit code."""
    recipe = load_recipe(args.recipe, args.overrides, **recipe_options(args))
    plan = plan_for(recipe, default_registry(), args)
    outcomes = []
    for item in plan.needed.values():
        outcome = settle(item, check=args.check)
        outcomes.append((item, outcome))
        print(line(item, outcome), flush=True)
    for label, sentence in plan.notes:
        print(f"{label}: {sentence}")
    for label, sentence in plan.problems:
        print(f"{label}: {sentence}.")
    text, ready = verdict(recipe, plan, outcomes)
    print(text)
    return 0 if ready else 1

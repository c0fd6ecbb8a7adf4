"""``${...}`` interpolations in recipe values, resolved by v2a itself with a closed set of
resolvers.

The syntax is OmegaConf's, in the part recipes need:

* ``${training.steps}`` is the value at that dotted key; ``${sampling.steps[0]}`` (or
  ``${sampling.steps.0}``) a list item; ``${.dim}`` is relative: the first dot is the mapping
  that holds the value, each further dot one level up;
* a value that is a single interpolation keeps the type of what it names; text around
  interpolations makes a string (``"run_${training.seed}"``); ``\\${`` writes a literal ``${``;
* ``${name:arg,...}`` calls a resolver (see :data:`RESOLVERS`).

Only :class:`Evaluator` reads data, and only through the ``lookup`` it is given: nothing here
touches OmegaConf's process-wide resolver registry, and a resolver that reads outside the data
(``oc.env``) runs only when the caller allows it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from v2a.errors import closest

#: A position in nested data: mapping keys (str) and list indices (int).
Key = tuple[str | int, ...]

#: The resolvers a recipe may call, and what each does.
RESOLVERS = {
    "oc.select": "``${oc.select:key,default}``: the value at key, or default (null if not given) "
                 "when the recipe has no such key",
    "oc.dict.keys": "``${oc.dict.keys:key}``: the keys of the mapping at key, as a list",
    "oc.dict.values": "``${oc.dict.values:key}``: the values of the mapping at key, as a list",
    "oc.decode": "``${oc.decode:text}``: text read as a YAML value (``'[1, 2]'`` is a list)",
    "oc.env": "``${oc.env:NAME,default}``: an environment variable, as a string; refused unless "
              "allowed",
}
#: Interpolations may nest (``${a.${b}}``) this deep.
MAX_NESTING = 8
#: A chain of references (a names b, which names c, ...) may be this long.
MAX_CHAIN = 64


def dotted(key: Key) -> str:
    """``("sampling", "steps", 0)`` → ``"sampling.steps[0]"``."""
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def has_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


class InterpolationError(Exception):
    """The interpolation in the value at ``at`` cannot be resolved; ``message`` says why, as a
    clause that starts with the interpolation's text."""

    def __init__(self, at: Key, message: str):
        super().__init__(f"{dotted(at)}: {message}")
        self.at = at
        self.message = message


class Unavailable(Exception):
    """Raised by a lookup for a key that exists but cannot be read yet (``waiting_for``: the part
    of the data still being resolved). The evaluator adds where it was asked for: ``at``, the key
    holding the interpolation, and ``reference``, its text."""

    def __init__(self, waiting_for: Key):
        super().__init__(dotted(waiting_for))
        self.waiting_for = waiting_for
        self.at: Key | None = None
        self.reference = ""


class Absent(Exception):
    """Raised by a lookup for a key that does not exist; ``reason`` is a clause saying so
    (``"codec 'encodec' has no 'n_codebooks'; did you mean 'codec.codebook_size'?"``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class LimitError(Exception):
    """Resolving made a value larger than allowed (``what``: ``"values"`` or ``"characters"``)."""

    def __init__(self, at: Key, what: str, limit: int):
        super().__init__(f"{dotted(at)}: more than {limit} {what}")
        self.at, self.what, self.limit = at, what, limit


def walk(root: Any, key: Key, *, start: int = 0, name: str = "") -> Any:
    """The value at ``key[start:]`` below ``root`` (whose own key is ``key[:start]``), or
    :class:`Absent` naming the first part that is missing and the closest keys beside it.
    ``name`` describes ``root`` in that message (default: its dotted key)."""
    node = root
    for depth in range(start, len(key)):
        part = key[depth]
        if isinstance(node, Mapping) and str(part) in node:
            node = node[str(part)]
            continue
        if isinstance(node, list) and re.fullmatch(r"-?\d+", str(part)) and (
                -len(node) <= int(part) < len(node)):
            node = node[int(part)]
            continue
        where = (name if depth == start and name else dotted(key[:depth])) or "the recipe"
        if isinstance(node, list):
            raise Absent(f"{where} is a list of {len(node)} items, which has no item {part!r}")
        if not isinstance(node, Mapping):
            raise Absent(f"{where} is {node!r}, which has no key {part!r}")
        near = closest(str(part), [str(k) for k in node])
        hint = ("; did you mean " + " or ".join(repr(dotted((*key[:depth], k))) for k in near) + "?"
                if near else "")
        raise Absent(f"{where} has no {part!r}{hint}")
    return node


def count_values(value: Any) -> int:
    """Nodes in plain data: 1 per scalar, 1 per list or mapping plus its contents (keys not
    counted)."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        total += 1
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


# -- parsing ------------------------------------------------------------------------------------


class InterpolationSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Quoted:
    text: str


@dataclass(frozen=True)
class Interp:
    """One ``${...}``: its body as tokens (text, :class:`Quoted`, nested :class:`Interp`, and the
    separators :data:`COLON` and :data:`COMMA`) and its source text."""

    tokens: tuple
    source: str


COLON, COMMA = object(), object()


def parse(text: str) -> list[str | Interp]:
    """``text`` as literal pieces and interpolations (``\\${`` is a literal ``${``)."""
    parts: list[str | Interp] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("\\${", i):
            literal.append("${")
            i += 3
        elif text.startswith("${", i):
            if literal:
                parts.append("".join(literal))
                literal = []
            node, i = _parse_interp(text, i, 1)
            parts.append(node)
        else:
            literal.append(text[i])
            i += 1
    if literal:
        parts.append("".join(literal))
    return parts


def _parse_interp(text: str, start: int, depth: int) -> tuple[Interp, int]:
    if depth > MAX_NESTING:
        raise InterpolationSyntaxError(f"interpolations nest more than {MAX_NESTING} deep")
    tokens: list = []
    chars: list[str] = []
    resolver = False
    braces = brackets = 0  # `{` and `[` opened in the body (a mapping or list argument)
    i = start + 2

    def flush() -> None:
        if chars:
            tokens.append("".join(chars))
            chars.clear()

    while i < len(text):
        c = text[i]
        if text.startswith("\\${", i):
            chars.append("${")
            i += 3
        elif text.startswith("${", i):
            flush()
            node, i = _parse_interp(text, i, depth + 1)
            tokens.append(node)
        elif c == "}" and not braces:
            flush()
            return Interp(tuple(tokens), text[start:i + 1]), i + 1
        elif c in "{}[]":
            if c in "{}":
                braces += 1 if c == "{" else -1
            else:
                brackets = max(0, brackets + (1 if c == "[" else -1))
            chars.append(c)
            i += 1
        elif c in "'\"":
            end = text.find(c, i + 1)
            if end < 0:
                raise InterpolationSyntaxError(f"a quote ({c}) is not closed")
            flush()
            tokens.append(Quoted(text[i + 1:end]))
            i = end + 1
        elif c == ":" and not resolver:
            flush()
            tokens.append(COLON)
            resolver = True
            i += 1
        elif c == "," and resolver and not (braces or brackets):
            flush()
            tokens.append(COMMA)
            i += 1
        else:
            chars.append(c)
            i += 1
    raise InterpolationSyntaxError("a '${' is not closed by '}'")


KEY_PART = re.compile(r"\.?([^.\[\]]+)|\[([^\[\]]+)\]")


def key_of(text: str, at: Key) -> Key:
    """The key an interpolation names, ``at`` being the key of the value that holds it."""
    text = text.strip()
    rest = text.lstrip(".")
    dots = len(text) - len(rest)
    parts: list[str] = []
    pos = 0
    while pos < len(rest):
        match = KEY_PART.match(rest, pos)
        if match is None or (pos == 0 and rest[0] == ".") or (pos > 0 and rest[pos] not in ".["):
            raise InterpolationSyntaxError(f"{text!r} is not a dotted key")
        parts.append((match.group(1) or match.group(2)).strip())
        pos = match.end()
    if not parts:
        raise InterpolationSyntaxError("it names no key")
    if dots > len(at):
        raise InterpolationSyntaxError(f"{text!r} climbs above the top of the recipe")
    base = at[:len(at) - dots] if dots else ()
    return (*base, *parts)


# -- evaluation -------------------------------------------------------------------------------


_NO_DEFAULT = object()


class Evaluator:
    """Resolves interpolations in plain data.

    Args:
        lookup: ``lookup(key) -> (value, final)``: the value at a full key, ``final`` when it
            is resolved already (its text is never read as interpolations again); raises
            :class:`Absent` or :class:`Unavailable`.
        allow_env: whether ``oc.env`` may read the environment.
        env_refusal: the clause that ends the refusal of ``oc.env`` (how to allow it).
        decode: parses text into a value (``oc.decode`` and plain resolver arguments); raises
            ValueError for text it refuses.
        max_values, max_chars: what one resolved value may hold; :class:`LimitError` beyond.

    One evaluator remembers what it resolved: make a new one when the data behind ``lookup``
    changes.
    """

    def __init__(self, lookup: Callable[[Key], tuple[Any, bool]], *, allow_env: bool,
                 env_refusal: str, decode: Callable[[str], Any], max_values: int, max_chars: int):
        self._lookup = lookup
        self._allow_env = allow_env
        self._env_refusal = env_refusal
        self._decode = decode
        self._max_values = max_values
        self._max_chars = max_chars
        self._memo: dict[Key, tuple[Any, int]] = {}
        self._active: list[Key] = []  # keys being resolved, outermost first

    def resolve(self, value: Any, at: Key) -> Any:
        """``value`` (found at ``at``) with every interpolation in it resolved."""
        return self._resolve(value, at)[0]

    # -- internals: every method returns (value, number of values in it) ----------------------
    def _resolve(self, value: Any, at: Key) -> tuple[Any, int]:
        if isinstance(value, Mapping):
            out, size = {}, 1
            for k, v in value.items():
                out[k], n = self._resolve(v, (*at, str(k)))
                size = self._check_size(size + n, at)
            return out, size
        if isinstance(value, list):
            items, size = [], 1
            for i, v in enumerate(value):
                item, n = self._resolve(v, (*at, i))
                items.append(item)
                size = self._check_size(size + n, at)
            return items, size
        if has_interpolation(value):
            return self._string(value, at)
        return value, 1

    def _check_size(self, size: int, at: Key) -> int:
        if size > self._max_values:
            raise LimitError(at, "values", self._max_values)
        return size

    def _string(self, text: str, at: Key) -> tuple[Any, int]:
        try:
            parts = parse(text)
        except InterpolationSyntaxError as exc:
            raise InterpolationError(at, f"{text!r} is not a valid interpolation: {exc}") from None
        self._active.append(at)
        try:
            if len(parts) == 1 and isinstance(parts[0], Interp):
                return self._interp(parts[0], at)
            pieces = [p if isinstance(p, str) else _as_text(self._interp(p, at)[0]) for p in parts]
            joined = "".join(pieces)
            if len(joined) > self._max_chars:
                raise LimitError(at, "characters", self._max_chars)
            return joined, 1
        finally:
            self._active.pop()

    def _interp(self, node: Interp, at: Key) -> tuple[Any, int]:
        try:
            if COLON in node.tokens:
                split = node.tokens.index(COLON)
                return self._call(node, node.tokens[:split], node.tokens[split + 1:], at)
            if any(isinstance(t, Quoted) for t in node.tokens):
                raise InterpolationSyntaxError("a key cannot be quoted")
            text = "".join(t if isinstance(t, str) else _as_text(self._interp(t, at)[0])
                           for t in node.tokens)
            return self._value_at(key_of(text, at), at, node.source)
        except InterpolationSyntaxError as exc:
            raise InterpolationError(
                at, f"{node.source} is not a valid interpolation: {exc}") from None
        except Unavailable as exc:
            if exc.at is None:
                exc.at, exc.reference = at, node.source
            raise

    def _value_at(self, key: Key, at: Key, reference: str,
                  default: Any = _NO_DEFAULT) -> tuple[Any, int]:
        if key in self._memo:
            return self._memo[key]
        looping = [i for i, a in enumerate(self._active) if a[:len(key)] == key]
        if looping:
            chain = " -> ".join(dotted(a) for a in (*self._active[looping[0]:], key))
            raise InterpolationError(at, f"{reference} closes a cycle of interpolations ({chain}); "
                                         "write one of these values out")
        if len(self._active) > MAX_CHAIN:
            raise InterpolationError(at, f"{reference} is reached through more than {MAX_CHAIN} "
                                         "interpolations in a row")
        try:
            value, final = self._lookup(key)
        except Absent as exc:
            if default is not _NO_DEFAULT:
                return default, count_values(default)
            raise InterpolationError(at, f"{reference} names no value: {exc.reason}") from None
        if final:
            result = value, self._check_size(count_values(value), at)
        else:
            result = self._resolve(value, key)
        self._memo[key] = result
        return result

    def _call(self, node: Interp, name_tokens: tuple, arg_tokens: tuple,
              at: Key) -> tuple[Any, int]:
        name = "".join(t for t in name_tokens if isinstance(t, str)).strip()
        if len(name_tokens) != 1 or not re.fullmatch(r"[A-Za-z_][\w.]*", name):
            raise InterpolationSyntaxError("a resolver's name must be plain text")
        if name not in RESOLVERS:
            near = [] if name.startswith("oc.") else closest(name, RESOLVERS)
            hint = ("did you mean " + " or ".join(repr(n) for n in near) + "?") if near else (
                "they offer " + ", ".join(RESOLVERS))
            raise InterpolationError(at, f"{node.source} calls the resolver {name!r}, which "
                                         f"recipes do not offer; {hint}")
        groups: list[list] = [[]]
        for token in arg_tokens:
            if token is COMMA:
                groups.append([])
            else:
                groups[-1].append(token)
        args = [self._argument(group, at, node) for group in groups] if arg_tokens else []
        wanted = {"oc.select": (1, 2), "oc.env": (1, 2), "oc.decode": (1, 1),
                  "oc.dict.keys": (1, 1), "oc.dict.values": (1, 1)}[name]
        if not wanted[0] <= len(args) <= wanted[1]:
            count = f"{wanted[0]}" if wanted[0] == wanted[1] else f"{wanted[0]} or {wanted[1]}"
            raise InterpolationError(at, f"{node.source}: {name} takes {count} arguments, "
                                         f"got {len(args)}")
        if name == "oc.env":
            return self._env(node, args, at)
        if name == "oc.decode":
            if not isinstance(args[0], str):
                raise InterpolationError(
                    at, f"{node.source}: oc.decode reads text, got {args[0]!r}")
            if has_interpolation(args[0]):
                return self._string(args[0], at)
            value = self._decoded(args[0], node, at)
            return value, self._check_size(count_values(value), at)
        if not isinstance(args[0], str):
            raise InterpolationError(at, f"{node.source}: {name} needs a key, got {args[0]!r}")
        key = key_of(args[0], at)
        if name == "oc.select":
            return self._value_at(key, at, node.source, args[1] if len(args) == 2 else None)
        mapping, _ = self._value_at(key, at, node.source)
        if not isinstance(mapping, Mapping):
            raise InterpolationError(at, f"{node.source}: {dotted(key)} is not a mapping")
        if name == "oc.dict.keys":
            return list(mapping), len(mapping) + 1
        values = [self._value_at((*key, str(k)), at, node.source) for k in mapping]
        return [v for v, _ in values], self._check_size(1 + sum(n for _, n in values), at)

    def _env(self, node: Interp, args: list, at: Key) -> tuple[Any, int]:
        variable = args[0]
        if not self._allow_env:
            raise InterpolationError(at, f"{node.source} reads the environment variable "
                                         f"{variable}, {self._env_refusal}")
        if not isinstance(variable, str) or variable not in os.environ:
            if len(args) == 2:
                return args[1], 1
            raise InterpolationError(at, f"{node.source}: the environment variable {variable} is "
                                         "not set, and no default is given")
        value = os.environ[variable]
        if len(value) > self._max_chars:
            raise LimitError(at, "characters", self._max_chars)
        return value, 1

    def _decoded(self, text: str, node: Interp, at: Key) -> Any:
        try:
            return self._decode(text)
        except ValueError as exc:
            raise InterpolationError(at, f"{node.source}: {exc}") from None

    def _argument(self, tokens: list, at: Key, node: Interp) -> Any:
        """A resolver argument: a quoted string as is; one interpolation (with spaces around it)
        as its value; plain text read as YAML (a scalar, or a flow list or mapping); anything
        else joined as text."""
        meaningful = [t for t in tokens if not (isinstance(t, str) and not t.strip())]
        if len(meaningful) == 1 and isinstance(meaningful[0], Quoted):
            return meaningful[0].text
        if len(meaningful) == 1 and isinstance(meaningful[0], Interp):
            return self._interp(meaningful[0], at)[0]
        if all(isinstance(t, str) for t in tokens):
            text = "".join(tokens).strip()
            value = self._decoded(text, node, at) if text else ""
            if isinstance(value, (list, dict)):  # only written as one: `[1, 2]`, `{a: 1}`
                return value if text[0] in "[{" else text
            return value
        return "".join(t if isinstance(t, str) else t.text if isinstance(t, Quoted)
                       else _as_text(self._interp(t, at)[0]) for t in tokens).strip()


def _as_text(value: Any) -> str:
    """How a value reads inside a string: ``null`` as ``None``, as OmegaConf writes it."""
    return str(value)

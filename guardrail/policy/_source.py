"""Read policy YAML into plain data while remembering where every key and value came from.

A :class:`PositionLoader` (a ``yaml.SafeLoader`` subclass) composes the node graph, then builds plain
``dict``/``list``/scalar data itself so that it can record the 1-based source position of every node, keyed by
its path (``("rules", 2, "when", "visual", "below")``), and refuse what a policy must never contain: duplicate
keys, merge keys, tags other than plain YAML scalars (``!!python/object/...`` is refused, never run), recursive
aliases and alias bombs. Problems are collected, not raised, so that a file reports all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["INVALID", "MAX_BYTES", "MAX_DEPTH", "MAX_VALUES", "Located", "Path", "Pos", "label", "read_yaml"]

MAX_BYTES = 1 << 20
"""Largest policy file accepted (1 MiB): policies are a few dozen lines."""
MAX_VALUES = 10_000
"""Most values a document may expand to, aliases included: bounds memory against alias bombs."""
MAX_DEPTH = 64
"""Deepest nesting accepted; a policy needs about six levels."""

Path = tuple[str | int, ...]
_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_CORE + t for t in ("str", "int", "float", "bool", "null", "timestamp"))


class _Invalid:
    """Stands in for a value that was refused, so that validation errors below it can be dropped."""

    def __repr__(self) -> str:
        return "<invalid>"


INVALID: Any = _Invalid()


@dataclass(frozen=True)
class Pos:
    """A 1-based line and column in the source text."""

    line: int
    column: int


@dataclass
class Located:
    """Plain data read from YAML, with the position of each key and value and the problems found."""

    data: Any = None
    keys: dict[Path, Pos] = field(default_factory=dict)
    """Where the key of each mapping entry is written."""
    values: dict[Path, Pos] = field(default_factory=dict)
    """Where each value starts (the root is ``()``)."""
    problems: list[tuple[Pos, str]] = field(default_factory=list)
    refused: set[Path] = field(default_factory=set)
    """Paths whose value was refused (``INVALID``); later errors at or below them are noise."""


class _TooBig(Exception):
    """Raised to stop building data once the value bound is crossed."""


def _pos(mark: yaml.Mark | None) -> Pos:
    return Pos(1, 1) if mark is None else Pos(mark.line + 1, mark.column + 1)


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag


def _unsupported_tag(tag: str) -> str:
    return (
        f"unsupported YAML tag '{_short_tag(tag)}': policies are plain YAML (mappings, lists, strings, "
        "numbers, booleans, null); tags are refused, never executed"
    )


class PositionLoader(yaml.SafeLoader):
    """A SafeLoader that builds plain data itself, recording the source position of every node."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.located = Located()
        self._count = 0
        self._open: set[int] = set()

    def build(self, node: Node, path: Path) -> Any:
        """Plain data for ``node`` at ``path``; refused values become ``INVALID`` with a problem recorded."""
        self._count += 1
        if self._count > MAX_VALUES:
            at = self.located.keys.get(path[:1]) or _pos(node.start_mark)
            message = f"the document expands to more than {MAX_VALUES} values (an alias bomb?); not read further"
            self.located.problems.append((at, message))
            raise _TooBig
        self.located.values[path] = _pos(node.start_mark)
        if id(node) in self._open:
            return self._refuse(node, path, "recursive alias: this value contains itself")
        if len(path) > MAX_DEPTH:
            return self._refuse(node, path, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        self._open.add(id(node))
        try:
            if isinstance(node, SequenceNode) and node.tag == _CORE + "seq":
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode) and node.tag == _CORE + "map":
                return self._mapping(node, path)
            return self._refuse(node, path, _unsupported_tag(node.tag))
        finally:
            self._open.discard(id(node))

    def _scalar(self, node: ScalarNode, path: Path) -> Any:
        if node.tag not in _SCALAR_TAGS:
            return self._refuse(node, path, _unsupported_tag(node.tag))
        if node.tag == _CORE + "timestamp":
            return node.value  # nothing in a policy is a date: keep the text
        try:
            return self.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, KeyError, TypeError):
            return self._refuse(node, path, f"cannot read {node.value!r} as {_short_tag(node.tag)}")

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _CORE + "merge":
                self._problem(key_node, "merge keys ('<<') are not supported in policies: write the keys out")
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                self._problem(key_node, "keys must be plain strings")
                continue
            key = str(key_node.value)  # the text as written: YAML 1.1 would read `on:` or `yes:` as true
            if key in first:
                seen = _pos(first[key].start_mark)
                self._problem(
                    key_node,
                    f"{label((*path, key))}: duplicate key '{key}' (first defined at line {seen.line}, "
                    f"column {seen.column}); each key may appear once",
                )
                continue
            first[key] = key_node
            self.located.keys[(*path, key)] = _pos(key_node.start_mark)
            out[key] = self.build(value_node, (*path, key))
        return out

    def _refuse(self, node: Node, path: Path, message: str) -> Any:
        self.located.refused.add(path)
        where = label(path)
        self._problem(node, f"{where}: {message}" if where else message)
        return INVALID

    def _problem(self, node: Node, message: str) -> None:
        self.located.problems.append((_pos(node.start_mark), message))


def label(path: Path) -> str:
    """``("rules", 2, "when")`` -> ``rules[2].when``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_yaml(text: str) -> Located:
    """Compose ``text`` safely and build positioned plain data; YAML errors become problems, never raise."""
    try:
        loader = PositionLoader(text)  # the reader refuses control characters here
    except yaml.reader.ReaderError as exc:
        return Located(problems=[(_offset_pos(text, exc.position), f"YAML syntax error: {_reader(exc)}")])
    located = loader.located
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            message = f"YAML syntax error: {exc.problem or exc.context}"
            if exc.problem and exc.context and exc.context_mark is not None:
                at = _pos(exc.context_mark)
                message += f" ({exc.context} started at line {at.line}, column {at.column})"
            located.problems.append((_pos(exc.problem_mark or exc.context_mark), message))
            return located
        except yaml.reader.ReaderError as exc:
            located.problems.append((_offset_pos(text, exc.position), f"YAML syntax error: {_reader(exc)}"))
            return located
        except RecursionError:
            located.problems.append((Pos(1, 1), f"nested more than {MAX_DEPTH} levels deep"))
            return located
        try:
            located.data = None if root is None else loader.build(root, ())
        except _TooBig:
            located.data = INVALID
        if located.data is None:  # no document, only comments, or an explicit null
            located.problems.append((Pos(1, 1), "the file is empty (or only comments): a policy is a mapping"))
        return located
    finally:
        loader.dispose()


def _reader(exc: yaml.reader.ReaderError) -> str:
    char = exc.character
    code = f"#x{char:04x}" if isinstance(char, int) else repr(char)
    return f"unacceptable character {code}: {exc.reason}"


def _offset_pos(text: str, offset: int) -> Pos:
    line_start = text.rfind("\n", 0, offset) + 1
    return Pos(text.count("\n", 0, offset) + 1, offset - line_start + 1)

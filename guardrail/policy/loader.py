"""Load policies from YAML, reporting every problem as ``FILE:LINE:COL: key.path: message``.

The pipeline: bytes -> strict UTF-8 -> :func:`._source.read_yaml` (safe, positioned, duplicate keys refused)
-> :class:`~guardrail.policy.schema.Policy` validated by pydantic -> each pydantic error's ``loc`` mapped back
to the key path and source position it came from (discriminated-union tags such as ``fetch_more_views`` in
``('rules', 0, 'fetch_more_views', 'with', 'views')`` are dropped: they are not written in the file).
"""

from __future__ import annotations

import codecs
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path as FilePath
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ..errors import PolicyError, PolicyProblem
from ..types import COMPONENTS, Action
from ._source import INVALID, MAX_BYTES, Located, Path, Pos, label, read_yaml
from .schema import BOUND_TAGS, CertifiedBound, Condition, Policy

__all__ = ["builtin_policy_names", "check_policy_file", "load_builtin_policy", "load_policy"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_RULE_KEYS = ("name", "when", "do", "with")
_TYPE_WORDS = {
    "model_type": "should be a mapping",
    "model_attributes_type": "should be a mapping",
    "dict_type": "should be a mapping",
    "tuple_type": "should be a list",
    "list_type": "should be a list",
    "string_type": "should be a string",
    "int_type": "should be an integer",
    "int_parsing": "should be an integer",
    "int_from_float": "should be a whole number",
    "float_type": "should be a number",
    "float_parsing": "should be a number",
    "bool_type": "should be true or false",
    "bool_parsing": "should be true or false",
}
_WHY_NOT = {
    "on_exhausted": "when the budget is spent the call must end without an unchecked answer",
    "on_error": "fail closed: a failed stage never yields an unchecked answer",
    "on_uncalibrated": "raw scores are not probabilities: only accept_uncalibrated: true lets the rules accept them",
}


def load_policy(path_or_text: str | os.PathLike[str] | bytes, *, source: str | None = None) -> Policy:
    """Load a policy from a file path, a built-in name (``"default"``; an existing path wins), or YAML text
    (a ``str`` holding a newline, or ``bytes``). ``source`` names it in messages. Raises :class:`PolicyError`
    listing every problem found."""
    raw, where = _resolve(path_or_text, source)
    return _parse(raw, where)


def check_policy_file(path: str | os.PathLike[str]) -> list[PolicyProblem]:
    """Every problem in the policy file at ``path`` (an unreadable file is one problem at 1:1); ``[]`` if valid."""
    try:
        _parse(_read(FilePath(path), str(path)), str(path))
    except PolicyError as exc:
        return exc.problems
    return []


def builtin_policy_names() -> tuple[str, ...]:
    """Names of the policies shipped in ``guardrail/policies/`` (``default``, ``strict``, ...)."""
    folder = resources.files("guardrail") / "policies"
    return tuple(sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml")))


def load_builtin_policy(name: str) -> Policy:
    """The shipped policy ``name`` (see :func:`builtin_policy_names`)."""
    raw, where = _builtin(name)
    return _parse(raw, where)


# ---------------------------------------------------------------------------------------------------------------
# Finding and reading the source


def _resolve(arg: str | os.PathLike[str] | bytes, source: str | None) -> tuple[bytes | str, str]:
    if isinstance(arg, bytes):
        return arg, source or "<bytes>"
    if isinstance(arg, str) and "\n" in arg:
        return arg, source or "<string>"
    path = FilePath(arg)
    if isinstance(arg, str) and _NAME.fullmatch(arg) and not path.exists():
        raw, where = _builtin(arg)
        return raw, source or where
    return _read(path, source or str(arg)), source or str(arg)


def _builtin(name: str) -> tuple[bytes, str]:
    names = builtin_policy_names()
    if name not in names:
        message = f"no such file, and no built-in policy named {name!r} (built-ins: {', '.join(names)})"
        raise PolicyError([PolicyProblem(name, 1, 1, message)])
    resource = resources.files("guardrail") / "policies" / f"{name}.yaml"
    return resource.read_bytes(), str(resource)


def _read(path: FilePath, where: str) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PolicyError([PolicyProblem(where, 1, 1, f"cannot read the file: {exc.strerror or exc}")]) from exc


# ---------------------------------------------------------------------------------------------------------------
# Parsing and validating


def _parse(raw: bytes | str, where: str) -> Policy:
    """Decode, read and validate; raise :class:`PolicyError` with every problem, sorted by position."""
    text, found = _decode(raw)
    policy: Policy | None = None
    if not found:
        located = read_yaml(text)
        found = list(located.problems)
        data = located.data
        if data is not INVALID and data is not None and not isinstance(data, dict):
            found.append((Pos(1, 1) if () not in located.values else located.values[()], _not_a_mapping(data)))
        elif isinstance(data, dict):
            try:
                policy = Policy.model_validate(data)
            except ValidationError as exc:
                errors = list(exc.errors(include_url=False)) + list(_bad_rule_errors(data))
                found.extend(p for e in errors if (p := _problem(e, data, located)) is not None)
    if found or policy is None:
        lines = text.splitlines()
        problems = {
            PolicyProblem(where, pos.line, pos.column, msg, lines[pos.line - 1] if pos.line <= len(lines) else "")
            for pos, msg in found
        }
        raise PolicyError(sorted(problems, key=lambda p: (p.line, p.column, p.message)))
    return policy


def _decode(raw: bytes | str) -> tuple[str, list[tuple[Pos, str]]]:
    if len(raw) > MAX_BYTES:
        return "", [(Pos(1, 1), f"the policy is larger than {MAX_BYTES} bytes: a policy is a few dozen lines")]
    if isinstance(raw, str):
        return raw, []
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        start = exc.start
        line_start = raw.rfind(b"\n", 0, start) + 1
        column = len(raw[line_start:start].decode("utf-8", errors="replace")) + 1
        message = f"the file is not valid UTF-8: byte 0x{raw[start]:02x} cannot be decoded (policies are UTF-8 text)"
        return raw.decode("utf-8", errors="replace"), [(Pos(raw.count(b"\n", 0, start) + 1, column), message)]


def _not_a_mapping(data: Any) -> str:
    return f"the top level must be a mapping of policy keys ({', '.join(_allowed_keys(()))}), got {_describe(data)}"


def _bad_rule_errors(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Errors pydantic skips in a rule whose ``do`` is missing or unknown: its ``when`` and its keys."""
    rules = data.get("rules")
    if not isinstance(rules, list):
        return
    valid = {a.value for a in Action}
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict) or (isinstance(rule.get("do"), str) and rule["do"] in valid):
            continue
        for key in rule:
            if key not in _RULE_KEYS:
                yield {"type": "extra_forbidden", "loc": ("rules", index, key), "msg": "", "input": rule[key]}
        if "when" in rule:
            try:
                TypeAdapter(Condition).validate_python(rule["when"])
            except ValidationError as exc:
                for err in exc.errors(include_url=False):
                    yield {**err, "loc": ("rules", index, "when", *err["loc"])}


# ---------------------------------------------------------------------------------------------------------------
# From a pydantic error to a position and a message


def _problem(err: Any, data: dict[str, Any], located: Located) -> tuple[Pos, str] | None:
    loc: tuple[str | int, ...] = tuple(err["loc"])
    path = _path_of(loc, data)
    if any(path[: len(bad)] == bad for bad in located.refused):
        return None
    kind: str = err["type"]
    where = label(path)
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = _did_you_mean(str(path[-1]), allowed)
        return _key_pos(located, path), f"{where}: unknown key; expected one of: {', '.join(allowed)}{hint}"
    if kind == "missing":
        return _value_pos(located, path[:-1]), f"{where}: required key is missing"
    if kind == "union_tag_not_found":
        actions = ", ".join(_expected_tags(err))
        return _value_pos(located, path), f"{label((*path, 'do'))}: required key is missing (the action: {actions})"
    if kind == "union_tag_invalid":
        return _action_problem(path, err, located)
    in_threshold = len(path) >= 3 and path[-3] == "when" and path[-2] in COMPONENTS
    if in_threshold and kind in ("greater_than_equal", "less_than_equal", "finite_number"):
        message = f"threshold must be a probability in [0, 1], got {_describe(err.get('input'))}"
        return _value_pos(located, path), f"{where}: {message}"
    message = _TYPE_WORDS.get(kind) or _reword(str(err["msg"]))
    if kind != "value_error":
        message += f", got {_describe(err.get('input'))}{_not_a_number(kind, err.get('input'))}"
    if kind == "literal_error" and isinstance(err.get("input"), str):  # e.g. fetch_more_views' mode
        message += _did_you_mean(err["input"], re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected"))))
    return _value_pos(located, path), f"{where}: {message}" if where else message


def _action_problem(path: Path, err: Any, located: Located) -> tuple[Pos, str]:
    tag = str(err["ctx"]["tag"])
    expected = _expected_tags(err)
    do_path = (*path, "do") if (*path, "do") in located.values else path
    field = str(path[0]) if path else ""
    if tag in {a.value for a in Action} and field in _WHY_NOT:
        message = f"action '{tag}' is not allowed in {field} ({_WHY_NOT[field]}); expected one of: "
    else:
        message = f"unknown action '{tag}'; expected one of: "
    message += ", ".join(expected) + _did_you_mean(tag, expected)
    return _value_pos(located, do_path), f"{label(do_path)}: {message}"


def _path_of(loc: tuple[str | int, ...], data: Any) -> Path:
    """The key path written in the file: ``loc`` without the discriminator tags pydantic inserts."""
    path: list[str | int] = []
    node, tag_seen = data, False
    for segment in loc:
        is_tag = (isinstance(node, dict) and node.get("do") == segment) or (isinstance(node, str) and node == segment)
        is_tag = is_tag or (segment in BOUND_TAGS and not (isinstance(node, dict) and segment in node))
        if is_tag and not tag_seen:
            tag_seen = True
            continue
        path.append(segment)
        tag_seen = False
        if isinstance(node, dict):
            node = node.get(segment)
        elif isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node):
            node = node[segment]
        else:
            node = None
    return tuple(path)


def _key_pos(located: Located, path: Path) -> Pos:
    return located.keys.get(path) or _value_pos(located, path)


def _value_pos(located: Located, path: Path) -> Pos:
    while path and path not in located.values:
        path = path[:-1]
    return located.values.get(path, Pos(1, 1))


def _expected_tags(err: Any) -> list[str]:
    ctx = err.get("ctx") or {}
    if "expected_tags" in ctx:
        return re.findall(r"'([^']*)'", str(ctx["expected_tags"]))
    return [a.value for a in Action]


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    """The keys a mapping at raw pydantic ``loc`` may hold, in schema order (union members merged)."""
    candidates: list[Any] = [Policy]
    for segment in loc:
        models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if isinstance(segment, int):
            candidates = [arg for c in candidates for arg in _leaves(c, items=True)]
        elif tagged := [m for m in models if _tag_of(m) == segment]:
            candidates = list(tagged)
        elif segment in BOUND_TAGS:  # the number-or-certified union inside a threshold
            candidates = [c for c in candidates if (segment == "certified") == (c is CertifiedBound)]
        else:
            fields = [m.model_fields[n] for m in models for n, f in m.model_fields.items() if _alias(n, f) == segment]
            candidates = [leaf for f in fields for leaf in _leaves(f.annotation)]
    keys: dict[str, None] = {}
    for model in candidates:
        if isinstance(model, type) and issubclass(model, BaseModel):
            keys.update((_alias(n, f), None) for n, f in model.model_fields.items())
    return list(keys)


def _leaves(tp: Any, *, items: bool = False) -> list[Any]:
    """The concrete types inside ``tp`` (through Annotated, unions and, with ``items``, ``tuple[X, ...]``)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _leaves(typing.get_args(tp)[0], items=items)
    if origin in (typing.Union, types.UnionType):
        return [leaf for arg in typing.get_args(tp) for leaf in _leaves(arg, items=items)]
    if items and origin in (tuple, list):
        return _leaves(typing.get_args(tp)[0])
    return [] if items else [tp]


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("do")
    args = typing.get_args(field.annotation) if field is not None else ()
    return str(args[0]) if args else None


def _alias(name: str, field: Any) -> str:
    return str(field.alias or name)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _reword(msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    if msg.startswith("Input should be "):
        return "should be " + msg[len("Input should be ") :]
    return msg[:1].lower() + msg[1:]


def _not_a_number(kind: str, value: Any) -> str:
    """Why a boolean or a quoted number is refused where a number belongs (numbers are strict: schema.py)."""
    if kind not in ("float_type", "int_type"):
        return ""
    if isinstance(value, bool):
        return " (a boolean: YAML reads true, false, yes, no, on and off as booleans, never as numbers)"
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return f" (quoted, so text: write {value.strip()} without quotes)"
    return ""


def _describe(value: Any) -> str:
    """A value as YAML would show it, for ``got ...`` in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
    return repr(value)

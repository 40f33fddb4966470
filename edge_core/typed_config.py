"""Typed, validated config tables: one validator for engines, sources, power and the daemon.

A config section is a frozen dataclass deriving from `TypedConfig`. `from_dict(table, path)`
checks every key of a TOML/JSON table against the field types, collects every problem as
'key.path: message' (unknown keys, wrong types, missing keys, then the section's own
`problems()` for impossible values) and raises them together, so `check-config` can print all.

Supported field types: `str`, `int`, `float` (an int is accepted), `bool`, `Literal[...]`,
`tuple[T, ...]` (a TOML array), `X | None` (None is the default only; TOML has no null) and a
nested `TypedConfig` subclass (a sub-table, validated under its own key path).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, Literal, TypeVar

from edge_core.errors import ConfigError

_C = TypeVar("_C", bound="TypedConfig")
C_INT_MIN, C_INT_MAX = -(2**31), 2**31 - 1
MAX_NESTING = 64
"""Deepest nesting of tables/arrays a config, manifest or SigMF metadata file may have."""


def nesting_depth(obj: Any, limit: int = MAX_NESTING) -> int:
    """How deeply dicts/lists nest in `obj` (a scalar: 0), counted without recursion; stops
    counting once past `limit`."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def load_nested(load: Any, what: str, limit: int = MAX_NESTING) -> Any:
    """`load()` (a JSON/TOML parser call), with nesting beyond `limit` (or beyond what the
    parser's recursion can take) raised as ValueError('<what>: nested deeper than N levels')."""
    try:
        doc = load()
    except RecursionError:
        raise ValueError(f"{what}: nested deeper than {limit} levels") from None
    if nesting_depth(doc, limit) > limit:
        raise ValueError(f"{what}: nested deeper than {limit} levels")
    return doc


class ConfigProblems(ConfigError):
    """Invalid configuration; `problems` lists each one as 'key.path: message'."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class TypedConfig:
    """Base of every config section; subclasses are frozen dataclasses with typed fields.

    `errors`: the ConfigProblems subclass `from_dict` raises (a section may name its own).
    `section`: the key path `from_dict` reports under when none is given ("engine", ...).
    """

    errors: ClassVar[type[ConfigProblems]] = ConfigProblems
    section: ClassVar[str] = ""
    c_int_fields: ClassVar[tuple[str, ...]] = ()
    """Integer fields handed to a C API that takes a C int (a ZeroMQ socket option): values
    beyond it are problems here, not an OverflowError traceback at `run`."""

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) for each impossible value; subclasses extend it."""
        return []

    @classmethod
    def from_dict(cls: type[_C], data: Mapping[str, Any], path: str | None = None) -> _C:
        """Build and validate from a table; raises `cls.errors` listing every problem."""
        problems, config = cls._collect(data, cls.section if path is None else path)
        if problems or config is None:
            raise cls.errors(problems)
        return config

    @classmethod
    def _collect(cls: type[_C], data: Any, path: str) -> tuple[list[str], _C | None]:
        """Every problem of `data` (key paths under `path`) and the config when there are none."""
        where = path or "config"
        if not isinstance(data, Mapping):
            return [f"{where}: want a table, got {type(data).__name__}"], None
        hints = typing.get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        unknown = [key for key in data if key not in known]
        problems = [f"{_join(path, _toml_key(key))}: unknown key" for key in unknown]
        values: dict[str, Any] = {}
        bad: set[str] = set()
        for key in [f.name for f in fields(cls) if f.name in data]:
            sub = _join(path, key)
            nested = _nested_type(hints[key])
            if nested is not None:
                sub_problems, sub_config = nested._collect(data[key], sub)
                problems += sub_problems
                values[key] = sub_config
                continue
            message = _type_problem(hints[key], data[key])
            if not message and key in cls.c_int_fields and not C_INT_MIN <= data[key] <= C_INT_MAX:
                message = f"want at most {C_INT_MAX} (a C int), got {data[key]}"
                if data[key] < C_INT_MIN:
                    message = f"want at least {C_INT_MIN} (a C int), got {data[key]}"
            if message:
                problems.append(f"{sub}: {message}")
                bad.add(key)
            else:
                values[key] = tuple(data[key]) if isinstance(data[key], list) else data[key]
        missing = [
            f.name
            for f in fields(cls)
            if f.name not in data and f.default is MISSING and f.default_factory is MISSING
        ]
        problems += [f"{_join(path, key)}: missing" for key in missing]
        if problems:
            values = {k: v for k, v in values.items() if v is not None}  # bad sub-tables
            if not missing:  # the section's other values are still checked (defaults for bad)
                try:
                    partial = cls(**values)
                except (ConfigError, TypeError, ValueError):
                    partial = None
                if partial is not None:
                    later = [(k, m) for k, m in partial.problems() if k not in bad]
                    problems += [f"{_join(path, k)}: {m}" for k, m in later]
            return problems, None
        config = cls(**values)
        return [f"{_join(path, key)}: {message}" for key, message in config.problems()], config

    def to_dict(self) -> dict[str, Any]:
        """The config as a TOML/JSON-ready table (round-trips through `from_dict`; drops None)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, TypedConfig):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _toml_key(key: Any) -> str:
    """`key` as TOML writes it in a dotted key: bare when it can be, else quoted ('' or 'a: b'
    would make an unreadable key path)."""
    text = str(key)
    if text and all(c.isascii() and (c.isalnum() or c in "_-") for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _nested_type(hint: Any) -> type[TypedConfig] | None:
    return hint if isinstance(hint, type) and issubclass(hint, TypedConfig) else None


def _type_problem(hint: Any, value: Any) -> str | None:
    """Why `value` does not fit the type `hint`; None when it fits."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        return None if value in choices else f"{value!r} is not one of {list(choices)}"
    if origin is tuple:
        (item, _) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            return f"want a list, got {value!r}"
        bad = [_type_problem(item, v) for v in value]
        return next((f"item {i}: {b}" for i, b in enumerate(bad) if b), None)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        if len(options) == 1:
            return _type_problem(options[0], value)
        reasons = [_type_problem(a, value) for a in options]
        return None if any(r is None for r in reasons) else "; ".join(r for r in reasons if r)
    if hint is bool:
        return None if isinstance(value, bool) else f"want true or false, got {value!r}"
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"want an integer, got {value!r}"
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"want a number, got {value!r}"
    if hint is str:
        return None if isinstance(value, str) else f"want a string, got {value!r}"
    raise TypeError(f"config field type {hint!r} is not supported")


__all__ = [
    "C_INT_MAX",
    "MAX_NESTING",
    "ConfigProblems",
    "TypedConfig",
    "load_nested",
    "nesting_depth",
]

"""Typed configs: YAML files load into frozen dataclasses, checked at construction.

`load_config(path, WorldConfig)` reads a YAML mapping and `from_dict` builds the dataclass:
- unknown keys are refused, naming them and the valid ones;
- every value is checked against its field's type hint (`int`, `float`, `bool`, `str`, `Path`,
  `Literal[...]` choices, `tuple[X, ...]`, `dict[K, V]`, `X | None`, nested dataclasses), and a
  mismatch is a ConfigError naming the field, the value and what was expected. YAML reads `1e-3`
  (no dot before the `e`) as a *string*; that case gets its own hint;
- then the dataclass's `__post_init__` rejects bad values with the reason (a ConfigError too).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from livemind.errors import ConfigError

T = TypeVar("T")


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict:
        return f"a mapping of {_describe(args[0])} to {_describe(args[1])}" if args else "a mapping"
    if hint is type(None):
        return "null"
    if hint is float:
        return "a number"
    if hint is int:
        return "an integer"
    if hint is bool:
        return "true or false"
    if hint is str:
        return "a string"
    if dataclasses.is_dataclass(hint):
        return f"a mapping for {hint.__name__}"
    return getattr(hint, "__name__", str(hint))


class _Mismatch(Exception):
    pass


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """`value` checked against `hint` (converted where lossless: int -> float, list -> tuple, str -> Path)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1:  # X | None: the inner field's own error, if any, is the clearer one
            return _coerce(arms[0], value, where)
        for a in arms:
            try:
                return _coerce(a, value, where)
            except (_Mismatch, ConfigError):
                continue
        raise _Mismatch
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        item = args[0] if args else Any
        if len(args) == 2 and args[1] is Ellipsis or len(args) <= 1:
            return tuple(_field(item, v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise _Mismatch
        return tuple(_field(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        k, v = args if args else (Any, Any)
        return {_field(k, key, f"{where} key"): _field(v, val, f"{where}.{key}") for key, val in value.items()}
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return from_dict(hint, value, where)
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if hint is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _Mismatch
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _Mismatch
    return value  # a hint this checker does not know: the dataclass checks it


def _field(hint: Any, value: Any, where: str) -> Any:
    try:
        return _coerce(hint, value, where)
    except _Mismatch:
        pass
    got = f"{value!r} ({type(value).__name__})"
    msg = f"{where}: expected {_describe(hint)}, got {got}"
    if isinstance(value, str) and _is_number(value):
        msg += f"; YAML read {value!r} as a string: write it with a dot before the exponent (e.g. 1.0e-3)"
    raise ConfigError(msg)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Build dataclass `cls` from a mapping, checking every value against its field's type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _field(hints[name], value, f"{source}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def load_config(path: str | Path, cls: type[T]) -> T:
    """Read a YAML file into `cls`; a missing or unparsable file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return from_dict(cls, data, str(path))


def to_dict(config: Any) -> dict[str, Any]:
    """The inverse of `from_dict`, for writing a config next to the artefacts it produced."""
    return dataclasses.asdict(config)

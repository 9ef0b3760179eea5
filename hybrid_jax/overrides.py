"""Nested frozen dataclasses from dicts and from `key.sub=value` overrides.

Every leaf field of a dataclass tree has a dotted key (`model.d_model`, `optim.lr`). Values are
parsed with `yaml.safe_load` and then coerced to the field's annotated type, so `optim.lr=1e-3`
(which YAML reads as a string) is a float and `schedule.decay_tokens=[1e6,2e6]` a tuple of ints.
An unknown key is an error naming the nearest valid key; a value of the wrong type is an error
naming the key. Validation of values is the dataclasses' own `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml


class OverrideError(ValueError):
    """An override or config entry names an unknown key or has a value of the wrong type."""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a dataclass tree, depth first, in field order."""
    keys = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        keys += leaf_keys(tp, key + ".") if _is_dataclass_type(tp) else [key]
    return keys


def unknown_key_error(key: str, valid: Iterable[str], where: str) -> OverrideError:
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not close:  # a bad section prefix with a good leaf name: match on the last part
        tails = {k.rsplit(".", 1)[-1]: k for k in valid}
        tail = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(tails), n=1, cutoff=0.6)
        close = [tails[tail[0]]] if tail else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return OverrideError(f"unknown {where} key {key!r}{hint}")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` as type `tp` (int, float, bool, str, X | None, tuple[X, ...], dict[K, V]) or
    OverrideError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except OverrideError as e:
                errors.append(str(e))
        raise OverrideError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            value = [value] if value is not None else None
        if value is None:
            raise OverrideError(f"{key}: expected a list ({_type_name(tp)}), got None")
        item_tp = args[0] if args and (len(args) == 2 and args[1] is Ellipsis) else None
        if item_tp is None:
            if len(args) != len(value):
                raise OverrideError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
        return tuple(coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise OverrideError(f"{key}: expected a mapping ({_type_name(tp)}), got {value!r}")
        return {coerce(k, key_tp, f"{key} key"): coerce(v, value_tp, f"{key}.{k}")
                for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise OverrideError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise OverrideError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        number = _as_number(value)
        if number is not None and float(number).is_integer():
            return int(number)
        raise OverrideError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise OverrideError(f"{key}: expected a number, got {value!r}")
        number = _as_number(value)
        if number is None:
            raise OverrideError(f"{key}: expected a number, got {value!r}")
        return float(number)
    if tp is str:
        if isinstance(value, str):
            return value
        raise OverrideError(f"{key}: expected a string, got {value!r} ({type(value).__name__}); "
                            "quote it")
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return from_dict(tp, value, prefix=key + ".")
        raise OverrideError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
    raise OverrideError(f"{key}: unsupported field type {tp!r}")  # a bug in a config class


def _as_number(value: Any) -> float | int | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.replace("_", ""))
        except ValueError:
            pass
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) dict; missing fields keep their defaults."""
    if not isinstance(data, dict):
        raise OverrideError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in names:
            raise unknown_key_error(key, [f"{prefix}{k}" for k in leaf_keys(cls)] +
                           [f"{prefix}{n}" for n in names], "config")
        kwargs[name] = coerce(value, hints[name], key)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[str, Any]:
    """`"a.b=value"` -> ("a.b", yaml.safe_load("value")); an empty value is None."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise OverrideError(f"override {text!r} is not of the form key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise OverrideError(f"override {key}: cannot parse {raw!r}: {yaml_problem(e)}") from None
    return key, value


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML parse error on one line: what is wrong and where (1-based line and column)."""
    problem = getattr(err, "problem", None) or (str(err).splitlines() or ["invalid YAML"])[0]
    context = getattr(err, "context", None)
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{context + ': ' if context else ''}{problem}{where}"


_KIND = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}


def load_yaml_mapping(path: str | Path, error: type[Exception]) -> dict:
    """A YAML file's top-level mapping ({} for an empty file); `error`, naming the file, when it
    cannot be read, is not valid YAML, or holds something other than a mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise error(f"{path}: invalid YAML: {yaml_problem(e)}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file") from None
    except OSError as e:
        raise error(f"{path}: cannot read it ({e.strerror})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = _KIND.get(type(data), type(data).__name__)
        raise error(f"{path}: the top level must be a mapping of sections, got a {kind}")
    return data


def apply_overrides(obj: Any, overrides: Iterable[str] | dict[str, Any]) -> Any:
    """A copy of dataclass tree `obj` with each `key.sub=value` (or {key: value}) applied.

    All overrides are applied before any dataclass is rebuilt, so a change that is only valid
    together with another one (d_model and n_heads) is accepted.
    """
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    valid = leaf_keys(type(obj))
    pending: dict[str, Any] = {}
    for key, value in items:
        if key not in valid:
            raise unknown_key_error(key, valid, "override")
        pending[key] = value
    return _rebuild(obj, pending, "") if pending else obj


def _rebuild(obj: Any, pending: dict[str, Any], prefix: str) -> Any:
    hints = _hints(type(obj))
    kwargs = {}
    changed = False
    for f in dataclasses.fields(obj):
        key = prefix + f.name
        value = getattr(obj, f.name)
        if key in pending:
            value, changed = coerce(pending[key], hints[f.name], key), True
        elif any(k.startswith(key + ".") for k in pending):
            value, changed = _rebuild(value, pending, key + "."), True
        kwargs[f.name] = value
    return type(obj)(**kwargs) if changed else obj


def to_dict(obj: Any) -> Any:
    """A JSON-ready nested dict (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj

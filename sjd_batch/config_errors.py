"""Job-file errors in words: one pydantic validation error -> ``FILE: KEY.PATH: what was expected``.

pydantic's own texts ("Input should be a valid integer") name neither the file nor, for an unknown
key, what was meant; a job author needs both, so each error type gets a sentence here, and an
unknown key gets a "did you mean" from the keys its section allows.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any, Sequence

from pydantic import BaseModel

_TYPE_NAMES = {"int_type": "int", "float_type": "float", "string_type": "str", "bool_type": "bool",
               "int_from_float": "int", "float_parsing": "float", "int_parsing": "int"}
_MAPPING_TYPES = ("model_type", "model_attributes_type", "dict_type")
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"),
           "less_than": ("<", "lt")}


class ConfigError(ValueError):
    """A job file (or a --set override) is invalid; the message names the file and the key path."""


def describe(err: Any, source: str, root: type[BaseModel]) -> str:
    """One pydantic error (an `ErrorDetails`) as ``source: key.path: why``."""
    loc = tuple(err["loc"])
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        return unknown_key(source, key_path(loc), str(loc[-1]), allowed_keys(root, loc[:-1]))
    if kind == "literal_error":
        return f"{source}: {key_path(loc)}: must be one of {_choices(root, loc)}, got {value!r}"
    return f"{source}: {key_path(loc) or 'the job'}: {_why(kind, value, err)}"


def _why(kind: str, value: Any, err: Any) -> str:
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "missing required field"
    if kind in _MAPPING_TYPES:
        return f"expected a mapping, got {type(value).__name__}"
    if kind in _TYPE_NAMES:
        return f"expected {_TYPE_NAMES[kind]}, got {type(value).__name__} ({value!r})"
    if kind in ("tuple_type", "list_type", "too_short"):
        return f"expected a non-empty list of strings, got {value!r}"
    if kind in _BOUNDS:
        op, name = _BOUNDS[kind]
        return f"must be {op} {ctx.get(name)}, got {value!r}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg']} (got {value!r})"


def key_path(loc: Sequence[Any]) -> str:
    """('input', 'uris', 0) -> 'input.uris[0]'; a mapping's bad key: ('model', 'options', 3, '[key]') ->
    'model.options (key 3)'."""
    if loc and loc[-1] == "[key]":
        return f"{key_path(loc[:-2])} (key {loc[-2]!r})"
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def allowed_keys(root: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The keys the section at `loc` allows (its model's fields)."""
    model = _section(root, loc)
    return list(model.model_fields) if model is not None else []


def _section(root: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    model: Any = root
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        model = getattr(field, "annotation", None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
    return model


def _choices(root: type[BaseModel], loc: Sequence[Any]) -> tuple[Any, ...]:
    """The values a `Literal[...]` (or `Literal[...] | None`) field allows."""
    section = _section(root, loc[:-1])
    field = section.model_fields.get(loc[-1]) if section is not None else None
    hint = getattr(field, "annotation", None)
    args = typing.get_args(hint)
    if typing.get_origin(hint) is not typing.Literal:  # Optional: the Literal is one of the union's members
        args = next((typing.get_args(a) for a in args if typing.get_origin(a) is typing.Literal), ())
    return args


def unknown_key(source: str, key: str, name: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{source}: {key}: unknown key{hint}; allowed: {sorted(allowed)}"

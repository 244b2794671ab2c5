"""Pydantic's validation errors as one `SuiteError` line each, naming the dotted field.

`objectives[2].params.beta`, with the nearest valid name for a misspelt key.
"""
from __future__ import annotations

from typing import get_args

from pydantic import BaseModel, ValidationError

from bench.errors import SuiteError, SuiteErrors
from trainers.errors import nearest


def dotted(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) or str(part).isdigit() else (f".{part}" if text else str(part))
    return text


def _model_class(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_class(arg)
        if found is not None:
            return found
    return None


def _fields_at(root: type[BaseModel], loc: tuple) -> list[str]:
    """Valid field names of the model reached by following `loc` from `root`."""
    cls: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int) or cls is None:
            continue
        field = cls.model_fields.get(part)
        cls = _model_class(field.annotation) if field is not None else None
    return list(cls.model_fields) if cls is not None else []


def suite_errors(err: ValidationError, root: type[BaseModel], file: str, prefix: tuple = ()) -> SuiteError:
    """Every pydantic error, each a SuiteError line naming its dotted field (one error: itself)."""
    errors = [_one_error(e, root, file, prefix) for e in err.errors()]
    return errors[0] if len(errors) == 1 else SuiteErrors(errors)


def suite_error(err: ValidationError, root: type[BaseModel], file: str, prefix: tuple = ()) -> SuiteError:
    """The first pydantic error as a SuiteError naming the dotted field."""
    return _one_error(err.errors()[0], root, file, prefix)


def _one_error(first: dict, root: type[BaseModel], file: str, prefix: tuple = ()) -> SuiteError:
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and ("[" in p or "function-after" in p)))
    if first["type"] == "extra_forbidden":
        valid = _fields_at(root, loc[:-1])
        near = nearest(loc[-1], valid)
        hint = f"; did you mean '{near}'?" if near else f"; valid keys: {', '.join(valid)}"
        return SuiteError(file, dotted(prefix + loc), f"unknown key{hint}")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error":
        head = message.split()[0] if message.split() else ""
        if head in _fields_at(root, loc):
            loc = loc + (head,)
        return SuiteError(file, dotted(prefix + loc) or None, message)
    if first["type"] == "missing":
        return SuiteError(file, dotted(prefix + loc), "required field is missing")
    got = first.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) or len(repr(got)) < 60 else type(got).__name__
    return SuiteError(file, dotted(prefix + loc) or None, f"{message} (got {shown})")

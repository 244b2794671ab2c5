"""`--set a.b.c=value` on the command line: applied to the raw suite mapping before validation.

The value is parsed as YAML (so `[0.1, 0.3]` is a list); list entries are addressed by index
(`objectives.0.params.beta`). A path that cannot be followed is one `SuiteError` line.
"""
from __future__ import annotations

from typing import Any

import yaml

from bench.errors import SuiteError
from bench.suite.field_errors import dotted
from bench.suite.yaml_file import parse_yaml


def apply_override(data: dict, override: str, file: str) -> None:
    """Apply one `a.b.c=value` (value parsed as YAML) to the raw suite mapping in place."""
    key, sep, raw = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not key.strip() or any(not p for p in parts):
        raise SuiteError(file, None, f"--set {override!r}: expected KEY=VALUE with a dotted key, e.g. training.max_steps=10")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # an unparsable value is taken as a plain string; the schema judges it
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        node = _descend(node, part, parts[: depth + 1], override, file)
    _assign(node, parts[-1], value, parts, override, file)


def _descend(node: Any, part: str, path: list[str], override: str, file: str):
    if isinstance(node, list):
        index = _list_index(node, part, path, override, file)
        return node[index]
    if not isinstance(node, dict):
        raise SuiteError(file, dotted(path[:-1]), f"--set {override!r}: not a mapping, cannot set a key inside it")
    # A section missing from the file is created; the schema then rejects unknown names.
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def _assign(node: Any, part: str, value: Any, path: list[str], override: str, file: str) -> None:
    if isinstance(node, list):
        node[_list_index(node, part, path, override, file)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise SuiteError(file, dotted(path[:-1]), f"--set {override!r}: not a mapping, cannot set a key inside it")


def _list_index(node: list, part: str, path: list[str], override: str, file: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise SuiteError(file, dotted(path), f"--set {override!r}: no list entry {part!r} (the list has {len(node)})")
    return int(part)

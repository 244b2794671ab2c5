"""Reading a suite file: size and encoding checks, then safe YAML with two fixes to PyYAML.

Every problem is one `SuiteError` line naming the file (and the line, for YAML errors).
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from bench.errors import SuiteError


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe loader that rejects a key given twice (PyYAML silently keeps the last one)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' appears twice", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.1 (PyYAML) reads `1e-4` as a string; suites mean the number, as YAML 1.2 does.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


# A suite is settings only; the shipped ones are under 4 KB. Far larger files are mistakes
# (a data file passed as the suite), and YAML parsing them would take minutes.
MAX_SUITE_BYTES = 1_000_000


def read_yaml(path: Path) -> dict:
    file = str(path)
    if not path.exists():
        raise SuiteError(file, None, "suite file not found")
    if path.is_dir():
        raise SuiteError(file, None, "is a directory, not a suite file")
    size = path.stat().st_size
    if size > MAX_SUITE_BYTES:
        raise SuiteError(file, None, f"suite file is {size:,} bytes; the limit is {MAX_SUITE_BYTES:,} "
                                     "(a suite is settings only: put data in data.path)")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise SuiteError(file, None, f"not UTF-8 text: byte 0x{err.object[err.start]:02x} at line {line}") from None
    if not text.strip():
        raise SuiteError(file, None, "suite file is empty")
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SuiteError(file, None, f"not valid YAML{where}: {problem}") from None
    if data is None:
        raise SuiteError(file, None, "suite file has no content (only comments)")
    if not isinstance(data, dict):
        raise SuiteError(file, None, f"a suite must be a mapping of sections, got a {type(data).__name__}")
    return data

"""A fault corpus: one preference .jsonl file with every class of bad row met in the wild,
each line labelled with the skip reason the loader must count it under (None = a good row).

Used as a fixture (`fault_corpus` in conftest.py) by the data, validate and run tests, so a
new fault class is added here once and every entry point is checked against it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


def _j(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")


def _pair(prompt, chosen, rejected) -> bytes:
    return _j({"prompt": prompt, "chosen": chosen, "rejected": rejected})


_NEST = 200_000  # far beyond any recursion limit

# (label, line bytes, expected reason or None for a good row). Blank lines are not rows.
FAULTS: list[tuple[str, bytes, str | None]] = [
    ("good plain", _pair("Q: 1+1?\nA:", " 2", " 3"), None),
    ("good chat lists", _j({"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                             "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go"}]}), None),
    ("good 200 KB reply", _pair("Write a lot.", " " + "word " * 40_000, " no"), None),
    ("good NUL and control characters", _pair("Q\u0000\u0007", " a\u0000", " b\u001b"), None),
    ("good non-ASCII", _pair("Übersetze: 猫", " кот", " 🐈"), None),
    ("good CRLF ending", _pair("Q: crlf", " y", " n").rstrip() + b"\r", None),
    ("latin-1 bytes", b'{"prompt": "caf\xe9", "chosen": " a", "rejected": " b"}', "undecodable_bytes"),
    ("invalid UTF-8 start byte", b'{"prompt": "\xff\xfe", "chosen": " a", "rejected": " b"}', "undecodable_bytes"),
    ("truncated multi-byte character", b'{"prompt": "\xe2\x82", "chosen": " a", "rejected": " b"}', "undecodable_bytes"),
    ("deeply nested list", b"[" * _NEST + b"]" * _NEST, "too_deeply_nested"),
    ("deeply nested value", b'{"prompt": ' + b"[" * _NEST + b"]" * _NEST + b', "chosen": " a", "rejected": " b"}',
     "too_deeply_nested"),
    ("lone surrogate in a reply", b'{"prompt": "Q", "chosen": " \\ud800", "rejected": " b"}', "invalid_text"),
    ("lone surrogate in the prompt", b'{"prompt": "\\udfff Q", "chosen": " a", "rejected": " b"}', "invalid_text"),
    ("lone surrogate in a chat turn", _j({"chosen": [{"role": "user", "content": "\ud800"}, {"role": "assistant", "content": "a"}],
                                         "rejected": [{"role": "user", "content": "\ud800"}, {"role": "assistant", "content": "b"}]}),
     "invalid_text"),
    ("empty reply", _pair("Q", "", " b"), "empty_response"),
    ("whitespace-only reply", _pair("Q", " a", " \n\t "), "empty_response"),
    ("identical replies", _pair("Q", " same", " same"), "identical_responses"),
    ("missing rejected", _j({"prompt": "Q", "chosen": " a"}), "missing_field"),
    ("null reply", _pair("Q", None, " b"), "missing_field"),
    ("number reply", _pair("Q", 7, " b"), "unparseable"),
    ("broken JSON", b'{"prompt": "Q", "chosen": " a", "rejected"', "unparseable"),
    ("truncated JSON", b'{"prompt": "Q", "chosen": " a", "rej', "unparseable"),
    ("JSON list, not an object", _j(["Q", " a", " b"]), "unparseable"),
    ("JSON string, not an object", _j("Q a b"), "unparseable"),
    ("JSON number", b"42", "unparseable"),
    ("no assistant turn", _j({"chosen": [{"role": "user", "content": "Hi"}],
                              "rejected": [{"role": "user", "content": "Hi"}]}), "unparseable"),
    ("prompts differ", _j({"chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"}],
                           "rejected": [{"role": "user", "content": "y"}, {"role": "assistant", "content": "b"}]}),
     "prompts_differ"),
    ("prompt a dict", _j({"prompt": {"text": "Q"}, "chosen": " a", "rejected": " b"}), "unparseable"),
    ("good after the faults", _pair("Q: last?", " yes", " no"), None),
]


@dataclass
class FaultCorpus:
    path: Path
    skipped: dict[str, int]      # reason -> count the loader must report
    good_lines: list[int]        # 1-based line numbers of the rows that must load
    lines: list[tuple[int, str, bytes, str | None]]   # (1-based line, label, bytes, reason)


def write_fault_corpus(folder: Path, name: str = "faults.jsonl") -> FaultCorpus:
    path = Path(folder) / name
    # a byte-order mark at the start and blank / whitespace-only lines in between: not rows
    out, lines, n = [b"\xef\xbb\xbf" + FAULTS[0][1]], [(1, FAULTS[0][0], FAULTS[0][1], None)], 1
    for label, data, reason in FAULTS[1:]:
        if n % 5 == 0:
            out.append(b"   " if n % 10 else b"")
            n += 1
        out.append(data)
        n += 1
        lines.append((n, label, data, reason))
    path.write_bytes(b"\n".join(out) + b"\n")
    skipped: dict[str, int] = {}
    for _, _, _, reason in lines:
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
    return FaultCorpus(path, skipped, [ln for ln, _, _, r in lines if r is None], lines)

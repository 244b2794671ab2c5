"""The README's one-file examples of a scorer, a backend and a data source are the test-local
parts that the registry tests run (tests/parts/), shown as they are: the code in the README works."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("vowel_scorer.py", "echo_backend.py", "qa_source.py")


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("### Adding a scorer, a generation backend or a data source")
    return text[start:text.index("\n## ", start)]


@pytest.mark.parametrize("part", PARTS)
def test_readme_shows_the_tested_part_as_it_is(part):
    source = (ROOT / "tests" / "parts" / part).read_text()
    code = source.split('"""', 2)[2].replace("from __future__ import annotations\n\n", "").strip("\n")
    blocks = re.findall(r"```python\n(.*?)\n```", _section(), flags=re.S)
    assert code in blocks, f"README's example differs from tests/parts/{part}"

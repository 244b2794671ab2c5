"""Every document the code and the docs cite (`docs/X.md`, or a bare `DESIGN.md`) is in the repo."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITED = re.compile(r"(?<![\w/.-])((?:docs/)?[A-Z][A-Z_]+\.md)\b")


def _citations() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    files = [*REPO.glob("bench/**/*.py"), *REPO.glob("trainers/**/*.py"), *REPO.glob("tests/*.py"),
             REPO / "README.md", *REPO.glob("docs/*.md")]
    for path in files:
        for name in CITED.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, []).append(str(path.relative_to(REPO)))
    return found


def test_every_cited_document_is_in_docs():
    cited = _citations()
    assert "docs/OBJECTIVES.md" in cited and "docs/DESIGN.md" in cited
    missing = {name: where for name, where in cited.items()
               if name != "README.md" and not (REPO / "docs" / Path(name).name).is_file()}
    assert not missing, f"cited but not in docs/: {missing}"

"""bench.io.atomic_write: the one whole-file writer keeps the old file when a write breaks."""
from __future__ import annotations

import pytest

from bench.io import atomic_write


def test_a_broken_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.csv"
    atomic_write(path, lambda tmp: tmp.write_text("old\n"))

    def breaks(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, breaks)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]
    assert atomic_write(path, lambda tmp: tmp.write_text("new\n")) == path and path.read_text() == "new\n"

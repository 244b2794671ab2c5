"""The README's commands work exactly as written in a fresh checkout, and CI runs them."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_block_after(heading: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(re.escape(heading) + r"\s*```bash\n(.*?)\n```", text, re.S)
    assert m, f"README has no bash block after {heading!r}"
    return m.group(1).strip()


def test_ci_runs_the_readme_test_command_exactly():
    readme_cmd = _readme_block_after("Run the tests:")
    ci_lines = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()]
    assert readme_cmd in ci_lines, f".ci/run does not run the README's test command {readme_cmd!r}"
    # ...and runs no other pytest invocation that could hide a failing README command.
    assert [ln for ln in ci_lines if "pytest" in ln and not ln.startswith("#")][0] == readme_cmd


def test_readme_installs_the_cpu_torch_build_in_both_commands():
    for heading in ("Run the embedded default suite", "Run the tests:"):
        cmd = _readme_block_after(heading) if heading.endswith(":") else _readme_block_after(
            "(tiny model, tokenizer and data built in code):")
        assert cmd.startswith("pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && ")


def test_plain_pytest_imports_the_tests_package_and_this_checkout(tmp_path):
    """`pytest`, not `python -m pytest`: no current directory on sys.path (-I mimics the console
    script), no PYTHONPATH. Before `pythonpath` was set this stopped with
    `ModuleNotFoundError: No module named 'tests'`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-I", "-m", "pytest", "--collect-only", "-q", "tests/test_logps.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "ModuleNotFoundError" not in out.stdout
    probe = tmp_path / "test_probe.py"
    probe.write_text("import bench\n\ndef test_where():\n    print('BENCH_AT', bench.__file__)\n")
    out = subprocess.run(
        [sys.executable, "-I", "-m", "pytest", "-q", "-s", "--rootdir", str(REPO), "-c",
         str(REPO / "pyproject.toml"), str(probe)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    where = re.search(r"BENCH_AT (\S+)", out.stdout).group(1)
    assert Path(where).resolve().is_relative_to(REPO)

"""Bad input and broken environments are one line on stderr with exit 2, never a traceback;
where there is a traceback it is in a log file that the line names."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main

REPO = Path(__file__).resolve().parents[1]
MINIMAL = "name: t\nseeds: [0]\nobjectives:\n  - name: dpo\n"


def bench(*args, cwd=REPO, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(REPO / "bench.py"), *args], cwd=cwd, env=env, timeout=timeout,
                          capture_output=True, text=True)


def _one_line(result, *parts):
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-3000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def _corpus_suite(tmp_path, corpus, extra=""):
    path = tmp_path / "faults.yaml"
    path.write_text(f"name: faults\nseeds: [0]\nmodel: {{policy: 'builtin:tiny-llama'}}\n"
                    f"data: {{source: preference, path: {corpus.path}, eval_prompts: 2, drift_pairs: 0{extra}}}\n"
                    "training: {batch_size: 2}\nreward_model: {kind: none}\nscoring: {reward_model: false, drift: false}\n"
                    "objectives:\n  - name: dpo\n")
    return path


def test_validate_counts_the_fault_corpus_instead_of_a_traceback(tmp_path, fault_corpus):
    result = bench("validate", str(_corpus_suite(tmp_path, fault_corpus)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "undecodable_bytes" in result.stdout and "too_deeply_nested" in result.stdout
    assert f"{len(fault_corpus.good_lines)} pairs readable" in result.stdout


def test_validate_with_on_bad_row_error_names_the_line(tmp_path, fault_corpus):
    first_bad = next((ln, reason) for ln, _, _, reason in fault_corpus.lines if reason)
    result = bench("validate", str(_corpus_suite(tmp_path, fault_corpus, ", on_bad_row: error")))
    _one_line(result, f"line {first_bad[0]}: {first_bad[1]}", str(fault_corpus.path))


def test_non_utf8_and_oversized_suite_files(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: t\ndescription: caf\xe9\nseeds: [0]\n")
    _one_line(bench("validate", str(bad)), str(bad), "not UTF-8 text: byte 0xe9 at line 2")
    big = tmp_path / "big.yaml"
    big.write_text(MINIMAL + "# " + "x" * 2_000_000 + "\n")
    _one_line(bench("validate", str(big)), "2,000,0", "the limit is 1,000,000")


def test_out_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    suite = REPO / "suites" / "ci_smoke.yaml"
    _one_line(bench("run", str(suite), "--out", str(blocker / "out"), "--quiet"), "--out: cannot write results to")
    _one_line(bench("run", str(suite), "--out", "/proc/prefbench-out", "--quiet"), "--out: cannot write results to")


def test_unexpected_error_is_one_line_with_the_traceback_in_a_log(monkeypatch):
    import bench.suite.validate

    def broken(*args, **kwargs):
        raise RuntimeError("something inside broke\nsecond line")

    monkeypatch.setattr(bench.suite.validate, "validate_suite", broken)
    result = CliRunner().invoke(main, ["validate", "whatever.yaml"])
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: RuntimeError: something inside broke (traceback in ")
    log = Path(line.rsplit("traceback in ", 1)[1].rstrip(")"))
    assert "Traceback" in log.read_text() and "second line" in log.read_text()


def test_full_disk_while_logging_a_failure_is_still_one_line(tmp_path, monkeypatch):
    """The suite log cannot be written: the error still arrives as one line saying so."""
    from bench.run import prepare, runner
    from bench.errors import BenchError

    def broken_prepare(*args, **kwargs):
        raise RuntimeError("stage broke")

    real_write = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name.endswith(".log"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(prepare, "prepare", broken_prepare)   # the runner imports it when it runs the stages
    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(BenchError) as info:
        runner.run_suite(REPO / "suites" / "ci_smoke.yaml", out_dir=tmp_path / "out", progress=False)
    text = str(info.value)
    assert "\n" not in text and "RuntimeError: stage broke" in text
    assert "could not be written" in text and "No space left on device" in text
    assert info.value.__cause__ is None and info.value.__suppress_context__

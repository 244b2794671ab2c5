"""The vLLM engine's lifecycle under `bench.py run`: Ctrl-C (SIGINT to the process group, as a
terminal sends it) and then SIGTERM (as `kill` or a scheduler sends it) while the engine is
generating. Marker `vllm`.

Each time: the command exits within a bounded time with one line saying it stopped (no
traceback), no process it started survives it, and the same command run again resumes: the
stages finished before the signal are not computed again.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
REPO = Path(__file__).resolve().parents[1]
STOP_WITHIN_S = 30           # measured here: 2.8 s from the signal to the exit
# ci_smoke at head size 32 (one vLLM's CPU attention has), DPO alone (`--only dpo` would take
# rpo too: its first term is dpo), no SFT. 200 evaluation prompts keep the engine generating
# for a second or more, long enough to be interrupted in it.
ARGS = ["suites/ci_smoke.yaml", "--set", "objectives=[{name: dpo}]", "--set", "model.builtin.hidden_size=128",
        "--set", "generation.backend=vllm", "--set", "sft.enabled=false",
        "--set", "data.limit=400", "--set", "data.eval_prompts=200"]
# What vLLM's environment prints at any exit that is not ours: tqdm's redraw of the bar that was
# running, and triton's nanobind leak report at interpreter shutdown (every run prints it).
NOISE = re.compile(r"^(Processed prompts|nanobind: | - leaked | - \.\.\. skipped remainder|See https://nanobind)")


class Run:
    """`bench.py run` as a child in its own session; its output collected as it comes. Every
    process it starts inherits a marker in its environment, so any of them found alive later
    is found even if it left the tree (an orphan is re-parented)."""

    def __init__(self, out: Path, mark: str):
        env = {**os.environ, "PREFBENCH_LIFECYCLE_MARK": mark}
        self.proc = subprocess.Popen([sys.executable, "bench.py", "run", *ARGS, "--out", str(out)], cwd=REPO,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while chunk := os.read(self.proc.stdout.fileno(), 1 << 16):
            self.output.extend(chunk)

    def wait_for(self, condition, timeout: float = 600) -> None:
        end = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"the run ended first: {self.text()[-2000:]}"
            assert time.monotonic() < end, f"not reached in {timeout} s: {self.text()[-2000:]}"
            time.sleep(0.05)

    def finish(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(10)
        return rc

    def kill(self) -> None:
        """A failed check leaves no run behind: its whole session is killed."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def text(self, start: int = 0) -> str:
        return self.output[start:].decode(errors="replace")


def marked_processes(mark: str) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("PREFBENCH_LIFECYCLE_MARK") == mark:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


TRAINED = "train/*/checkpoint/prefbench_train.json"   # a training's last file (its manifest)


def done_stages(out: Path) -> dict:
    """Every finished stage (stage/key) and the mtime of its done marker (a training: of its
    checkpoint's manifest and weights, since a training folder resumes in place)."""
    stages = out / "stages"
    done = {f"{p.parent.parent.name}/{p.parent.name}": p.stat().st_mtime_ns for p in stages.glob("*/*/STAGE_DONE.json")}
    for manifest in stages.glob(TRAINED):
        folder = manifest.parent.parent
        weights = manifest.parent / "model.safetensors"
        done[f"train/{folder.name}"] = (manifest.stat().st_mtime_ns, weights.stat().st_mtime_ns)
    return done


def interrupt_while_generating(out: Path, how: str) -> dict:
    """Run until the trained policy's generation through the engine has begun, send the
    signal, check the exit; returns the stages that were finished at the signal."""
    mark = uuid.uuid4().hex
    run = Run(out, mark)
    try:
        return _interrupt(run, out, how, mark)
    finally:
        run.kill()


def _interrupt(run: Run, out: Path, how: str, mark: str) -> dict:
    import psutil

    # the reference is evaluated before training: the training's end, then the next bar is
    # the trained policy's generation (an engine swap, or a fresh engine after a restart)
    run.wait_for(lambda: any((out / "stages").glob(TRAINED)))
    start = len(run.output)
    run.wait_for(lambda: b"Processed prompts" in run.output[start:])
    finished = done_stages(out)
    # its processes now (none on CPU, where the engine runs in this process; an engine core or
    # a worker where it does not); any started later is found by the marker
    tree = psutil.Process(run.proc.pid).children(recursive=True)
    at = len(run.output)
    sent = time.monotonic()
    if how == "SIGINT":
        os.killpg(run.proc.pid, signal.SIGINT)   # Ctrl-C: the terminal signals the whole group
    else:
        run.proc.send_signal(signal.SIGTERM)
    rc = run.finish(STOP_WITHIN_S)
    took = time.monotonic() - sent
    after = run.text(at)
    assert rc == 130, (how, rc, after[-2000:])
    assert took < STOP_WITHIN_S
    assert "Traceback" not in run.text(), run.text()[-3000:]
    lines = [line for line in re.split(r"[\r\n]+", after) if line.strip() and not NOISE.match(line)]
    assert lines == ["stopped: interrupted; finished stages are kept; run the same command again to go on"], lines
    time.sleep(0.5)   # a child on its way out
    alive = [p.pid for p in tree if _alive(p)]
    assert alive == [] and marked_processes(mark) == [], (alive, marked_processes(mark))
    return finished


def _alive(proc) -> bool:
    import psutil

    try:   # a zombie is dead (its parent, gone now, did not wait for it)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_interrupted_run_leaves_no_engine_and_resumes(tmp_path):
    """SIGINT, then SIGTERM on the rerun, then a rerun to the end; training is done once."""
    out = tmp_path / "run"
    first = interrupt_while_generating(out, "SIGINT")
    assert any(name.startswith("train/") for name in first)
    second = interrupt_while_generating(out, "SIGTERM")
    assert {k: second[k] for k in first} == first        # the rerun computed none of them again
    mark = uuid.uuid4().hex
    last = Run(out, mark)
    try:
        assert last.finish(600) == 0, last.text()[-3000:]
    finally:
        last.kill()
    third = done_stages(out)
    assert {k: third[k] for k in second} == second
    new = set(third) - set(second)
    assert any(k.startswith("evaluate/") for k in new) and not any(k.startswith("train/") for k in new), new
    assert marked_processes(mark) == []

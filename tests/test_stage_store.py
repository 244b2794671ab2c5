"""The stage store: unique temporaries, atomic installs, manifests, damage detection and
repair of that stage only, leftovers, the folder lock, and two processes racing."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.run.store import ABSENT, DONE_MARKER, FolderLock, StageStore, leftovers, stage_problem

REPO = Path(__file__).resolve().parents[1]


def _build(payload: bytes, big: int = 0):
    def build(tmp: Path):
        (tmp / "small.json").write_bytes(payload)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "weights.bin").write_bytes(os.urandom(big) if big else b"w" * 10)
        return {"n": len(payload)}
    return build


def test_manifest_is_written_and_reuse_checks_it(tmp_path):
    store = StageStore(tmp_path)
    folder = store.run("eval", "k1", _build(b'{"a": 1}', big=9 << 20))   # one file above the full-hash limit
    marker = json.loads((folder / DONE_MARKER).read_text())
    assert set(marker["__files__"]) == {"small.json", "sub/weights.bin"}
    assert "sample_blake2b" in marker["__files__"]["sub/weights.bin"] and "sha256" in marker["__files__"]["small.json"]
    assert store.info("eval", "k1") == {"n": 8}
    again = StageStore(tmp_path)
    again.run("eval", "k1", lambda tmp: pytest.fail("an intact stage must be reused"))
    assert again.reused == ["eval/k1"] and again.computed == []


@pytest.mark.parametrize("damage,expect", [
    (lambda f: (f / "small.json").write_bytes(b'{"a"'), "small.json: 4 bytes, 8 expected"),
    (lambda f: (f / "small.json").write_bytes(b'{"b": 1}'), "small.json: checksum differs"),
    (lambda f: (f / "sub" / "weights.bin").unlink(), "sub/weights.bin: missing"),
    (lambda f: (f / "sub" / "weights.bin").write_bytes(b""), "sub/weights.bin: 0 bytes"),
    (lambda f: (f / DONE_MARKER).write_text(""), f"{DONE_MARKER} is damaged"),
    (lambda f: (f / DONE_MARKER).write_text("[1]"), f"{DONE_MARKER} is damaged"),
], ids=["truncated", "changed", "missing", "emptied", "empty-marker", "marker-not-object"])
def test_damaged_stage_is_recomputed_with_one_line(tmp_path, capsys, damage, expect):
    store = StageStore(tmp_path)
    folder = store.run("eval", "k1", _build(b'{"a": 1}'))
    store.run("other", "k2", _build(b'{"z": 2}'))
    damage(folder)
    assert expect in stage_problem(folder)
    fresh = StageStore(tmp_path)
    fresh.run("eval", "k1", _build(b'{"a": 1}'))
    fresh.run("other", "k2", lambda tmp: pytest.fail("only the damaged stage is recomputed"))
    assert fresh.computed == ["eval/k1"] and fresh.repaired == ["eval/k1"] and fresh.reused == ["other/k2"]
    assert stage_problem(folder) is None and (folder / "small.json").read_bytes() == b'{"a": 1}'
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("stage eval/k1: ") and expect in err[0]
    assert err[0].endswith("recomputing this stage")


def test_stage_without_manifest_from_an_older_version_is_trusted(tmp_path):
    folder = tmp_path / "stages" / "eval" / "k1"
    folder.mkdir(parents=True)
    (folder / DONE_MARKER).write_text('{"n": 1}')
    assert stage_problem(folder) is None
    assert stage_problem(tmp_path / "stages" / "eval" / "nothing") == ABSENT


def test_failed_build_leaves_no_temporary_and_no_stage(tmp_path):
    store = StageStore(tmp_path)

    def broken(tmp):
        (tmp / "half.json").write_text("{")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.run("eval", "k1", broken)
    assert list((tmp_path / "stages" / "eval").iterdir()) == []


def test_leftovers_of_killed_stages_are_found_and_removed(tmp_path):
    store = StageStore(tmp_path)
    store.run("eval", "k1", _build(b"{}"))
    junk = [tmp_path / "stages" / "eval" / ".k2.tmp-123-abcdef", tmp_path / "stages" / "train" / "r" / "checkpoint.tmp",
            tmp_path / "stages" / "train" / "r" / "state.tmp-9-ff", tmp_path / "stages" / "sft" / "s" / "checkpoint.old-1-2"]
    for path in junk:
        path.mkdir(parents=True)
        (path / "x").write_text("partial")
    cache = tmp_path / "stages" / "ref_logps" / "ref_logps-abc.safetensors.tmp-77-aa"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"partial")
    assert set(leftovers(tmp_path)) == set(junk) | {cache}
    assert sorted(store.clean_leftovers()) == sorted(set(junk) | {cache})
    assert leftovers(tmp_path) == [] and stage_problem(store.path("eval", "k1")) is None


# ---------------------------------------------------------------- two processes at once
def _race_worker(root: str, start_at: float, tag: str, queue) -> None:
    store = StageStore(Path(root))
    while time.time() < start_at:
        time.sleep(0.001)
    try:
        for i in range(12):
            def build(tmp, i=i):
                with open(Path(root) / "builds.log", "a") as log:   # O_APPEND: one whole line per write
                    log.write(f"key{i} {tag}\n")
                (tmp / "payload.json").write_text(json.dumps({"i": i, "by": tag}))
                time.sleep(0.01)
                (tmp / "weights.bin").write_bytes(tag.encode() * 1000)
            folder = store.run("race", f"key{i}", build)
            assert stage_problem(folder) is None, stage_problem(folder)
            json.loads((folder / "payload.json").read_text())
        queue.put((tag, "ok"))
    except BaseException as err:  # reported to the parent, which fails the test
        queue.put((tag, f"{type(err).__name__}: {err}"))


def _race(worker, folder, timeout: float) -> dict:
    """Two spawned processes A and B run `worker` on `folder`, released at the same instant;
    returns {tag: "ok" or the error each reported}."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 3
    procs = [ctx.Process(target=worker, args=(str(folder), start_at, tag, queue)) for tag in ("A", "B")]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=timeout) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    return results


def test_two_processes_building_the_same_stages_both_succeed(tmp_path):
    assert _race(_race_worker, tmp_path, 120) == {"A": "ok", "B": "ok"}
    # ... and each key was computed once: the second writer waited on the key's lock and
    # reused the first's (before the lock, both computed every key the race made them share)
    builds = sorted(line.split()[0] for line in (tmp_path / "builds.log").read_text().splitlines())
    assert builds == sorted(f"key{i}" for i in range(12)), builds
    for i in range(12):
        assert stage_problem(tmp_path / "stages" / "race" / f"key{i}") is None
    assert leftovers(tmp_path) == []


def _checkpoint_worker(folder: str, start_at: float, tag: str, queue) -> None:
    import torch
    from trainers.checkpoint import completed_steps, save_state

    class _Sched:
        def state_dict(self):
            return {"tag": tag}

    while time.time() < start_at:
        time.sleep(0.001)
    try:
        for step in range(15):
            # (not checked here: the other process may swap the folder between two of our reads;
            # one run's state has one writer, the run that holds the folder's lock)
            save_state(Path(folder) / "state", model_state={"w": torch.full((1 << 21,), float(step))},
                       optimizer_state={"tag": tag}, scheduler=_Sched(), step=step, rng_states=[{}])
        assert completed_steps(Path(folder) / "checkpoint") is None
        queue.put((tag, "ok"))
    except BaseException as err:
        queue.put((tag, f"{type(err).__name__}: {err}"))


def test_two_processes_saving_resume_state_at_once_leave_a_complete_one(tmp_path):
    """Before: both used `state.tmp` and deleted each other's half-written folder."""
    assert _race(_checkpoint_worker, tmp_path, 180) == {"A": "ok", "B": "ok"}
    from trainers.checkpoint import state_problem

    assert state_problem(tmp_path / "state") is None
    assert [p.name for p in tmp_path.iterdir()] == ["state"]


def test_a_finished_stage_is_never_replaced_while_intact(tmp_path):
    """Another process finishes the same stage while ours builds: ours keeps theirs in place
    (same folder, never deleted under a reader), and drops its own copy. Before, the store
    deleted the finished folder and renamed its own over it."""
    store, other = StageStore(tmp_path), StageStore(tmp_path)
    seen = {}

    def build(tmp):
        finished = other.run("eval", "k1", _build(b'{"a": 1}'))   # the other process, in between
        seen["inode"] = os.stat(finished).st_ino
        (tmp / "small.json").write_bytes(b'{"a": 1}')

    folder = store.run("eval", "k1", build)
    assert os.stat(folder).st_ino == seen["inode"] and stage_problem(folder) is None
    assert leftovers(tmp_path) == []


def test_a_checkpoint_saved_by_another_process_meanwhile_does_not_break_ours(tmp_path, monkeypatch):
    """The other process saves the same state while ours is half-way: both complete. Before,
    both used `state.tmp`, and the second deleted the first's half-written folder."""
    import torch

    from trainers import checkpoint

    class _Sched:
        def state_dict(self):
            return {}

    real_save, nested = torch.save, []

    def save(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        if not nested:
            nested.append(1)
            checkpoint.save_state(tmp_path / "state", model_state={"w": torch.ones(3)}, optimizer_state={},
                                  scheduler=_Sched(), step=7, rng_states=[{}])

    monkeypatch.setattr(torch, "save", save)
    checkpoint.save_state(tmp_path / "state", model_state={"w": torch.zeros(3)}, optimizer_state={},
                          scheduler=_Sched(), step=3, rng_states=[{}])
    assert checkpoint.state_problem(tmp_path / "state") is None
    assert json.loads((tmp_path / "state" / "trainer_state.json").read_text())["step"] == 3   # the last to finish
    assert [p.name for p in tmp_path.iterdir()] == ["state"]


# ---------------------------------------------------------------- the folder lock
def test_folder_lock_stops_a_second_holder_naming_the_first(tmp_path):
    with FolderLock(tmp_path):
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; from bench.run.store import FolderLock\n"
             "from bench.errors import BenchError\n"
             "try:\n    FolderLock(Path(sys.argv[1])).__enter__()\nexcept BenchError as e:\n    print(e)\n",
             str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert f"is in use by another run (pid {os.getpid()} on " in probe.stdout, probe.stdout + probe.stderr
    with FolderLock(tmp_path):   # released on exit: taken again at once
        pass


def test_lock_of_a_killed_holder_does_not_block(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path\n"
                               "from bench.run.store import FolderLock\nlock = FolderLock(Path(sys.argv[1]))\nlock.__enter__()\n"
                               "print('held', flush=True); time.sleep(600)", str(tmp_path)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(BenchError, match=f"pid {holder.pid} "):
        FolderLock(tmp_path).__enter__()
    holder.kill()
    holder.wait()
    with FolderLock(tmp_path):
        pass


def _lock_contender(folder: str, start_at: float, queue) -> None:
    from bench.run.store import FolderLock

    while time.time() < start_at:
        pass
    try:
        with FolderLock(Path(folder)):
            queue.put(("won", os.getpid()))
            time.sleep(1.0)
    except BenchError as err:
        queue.put(("refused", str(err)))


def test_a_refused_run_always_names_the_live_holder(tmp_path):
    """Two runs started at the same instant, ten times, after a finished and a killed holder:
    the refused one names the winner's pid every time (not "another process", not a run that
    has ended). The holder's line was written before its lock, and the kernel names its pid."""
    with FolderLock(tmp_path):      # a finished holder...
        pass
    killed = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path\n"
                               "from bench.run.store import FolderLock\nFolderLock(Path(sys.argv[1])).__enter__()\n"
                               "print('held', flush=True); time.sleep(600)", str(tmp_path)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "held"
    killed.kill()                   # ...and a killed one, whose line is left behind
    killed.wait()
    ctx = mp.get_context("spawn")
    refusals = 0
    for _ in range(10):
        queue = ctx.Queue()
        start_at = time.time() + 3.0
        procs = [ctx.Process(target=_lock_contender, args=(str(tmp_path), start_at, queue)) for _ in range(2)]
        for proc in procs:
            proc.start()
        results = [queue.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        won = [value for kind, value in results if kind == "won"]
        refused = [value for kind, value in results if kind == "refused"]
        if len(won) == 2:
            continue                # one finished before the other tried: no refusal to check
        assert len(won) == 1 and len(refused) == 1, results
        assert f"(pid {won[0]} on " in refused[0], (won, refused)
        refusals += 1
    assert refusals > 0, "no round had a refused run: the naming was never checked"

"""Cached, atomic stages: a stage's output lives in `stages/<name>/<key>/`, complete or absent.

A stage function writes into a temporary sibling directory with a name no other process
uses; when it returns, a manifest of its files (sizes and checksums, `trainers.manifest`) is
written into the done marker, and the directory is renamed into place (atomic on one
filesystem). A finished stage directory is never deleted before its replacement is in
place: a damaged one is first renamed aside. So a killed run leaves no half-written stage,
two processes writing the same stage both end with a complete one, and a rerun redoes none.

Each reuse checks the manifest. A stage whose files are missing, truncated or changed is
recomputed (that stage only) with one line on stderr saying which file and why. Stages
finished by an older version without a manifest are trusted as before (`verify` lists them).

A stage's key hashes what it reads and the code that computes it (`StageStore.key`,
bench.run.code_keys): other code is another stage, recorded (`config_key`, `code`) in the
done marker, or in `code.json` of a work folder, for `verify` and `--reuse-stale`.

A results folder is used by one `run` at a time (`FolderLock`): a second one stops at once
with one line naming the holder, rather than waiting for a run that may take hours. The
workers of that run (bench.executors) write under its lock; each stage key has a lock
of its own (`StageStore.lock`), so two writers of one key compute it once.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from bench.errors import BenchError
from bench.hashing import content_hash
from bench.io import atomic_write
from trainers.checkpoint import unique_suffix
from trainers.errors import say  # noqa: F401  (bench's one-line messages are the trainer's)
from trainers.manifest import build_manifest, check_manifest

DONE_MARKER = "STAGE_DONE.json"
CODE_FILE = "code.json"           # in a work folder (training): the configuration and code that made it
DISCARDED_NOTE = "checkpoint_discarded.json"   # in a train folder: its weights went after evaluation
FILES_KEY = "__files__"           # the manifest, inside the done marker (written last)
LOCK_FILE = ".prefbench.lock"
LOCKS_DIR = ".locks"           # one lock file per stage key being built (StageStore.lock)
ABSENT = "absent"
# Names of temporary and set-aside folders and files, here and in trainers/checkpoint.py and
# trainers/reference.py: `.<key>.tmp-<pid>-<random>`, `<name>.tmp-...`, `<name>.old-...`.
LEFTOVER_MARKERS = (".tmp-", ".old-", ".damaged-")
_HELD: set[str] = set()           # stage-key locks this process holds


class StageStore:
    """The stage folders of one suite output directory."""

    def __init__(self, root: Path, *, reuse_stale: bool = False):
        self.out = Path(root)
        self.root = self.out / "stages"
        self.reused: list[str] = []
        self.computed: list[str] = []
        self.repaired: list[str] = []     # stages recomputed because their files were damaged
        # --reuse-stale: a stage missing for this code is taken from other code when one of the
        # same configuration is finished; those taken are listed here (and in the results).
        self.reuse_stale = reuse_stale
        self.stale: list[str] = []
        self._records: dict[tuple[str, str], dict] = {}

    def key(self, name: str, config_key: str, code, *, may_be_stale: bool = True) -> str:
        """The key of stage `name` for a configuration (`config_key`, the hash of what it reads)
        computed by `code` (bench.run.code_keys.CodePrint): both are in the key, so other code
        is another stage. With `reuse_stale`, a stage of this configuration made by other code
        stands in for one this code has not made yet."""
        key = self.current_key(name, config_key, code)
        self._records[(name, key)] = {"config_key": config_key, "code": code.record()}
        if not (self.reuse_stale and may_be_stale) or self.finished(name, key):
            return key
        for other in self.same_config(name, config_key):
            if other != key and self.finished(name, other):
                if f"{name}/{other}" not in self.stale:
                    self.stale.append(f"{name}/{other}")
                return other
        return key

    @staticmethod
    def current_key(name: str, config_key: str, code) -> str:
        return content_hash(name, config_key, code.digest)

    def same_config(self, name: str, config_key: str) -> list[str]:
        """Keys of stage `name` recorded with this configuration (any code), newest first."""
        found = []
        folder = self.root / name
        for entry in folder.iterdir() if folder.is_dir() else ():
            record = read_record(entry)
            if record.get("config_key") == config_key:
                found.append((entry.stat().st_mtime, entry.name))
        return [key for _, key in sorted(found, reverse=True)]

    def finished(self, name: str, key: str) -> bool:
        """The stage is complete: a finished stage folder, or a work folder (training) holding its
        checkpoint or the note that the checkpoint went after its evaluation."""
        path = self.path(name, key)
        if (path / CODE_FILE).exists() and not (path / DONE_MARKER).exists():
            from trainers.checkpoint import CorruptStateError, completed_steps

            try:
                return completed_steps(path / "checkpoint") is not None or (path / DISCARDED_NOTE).exists()
            except CorruptStateError:
                return False
        return stage_problem(path) is None

    def record(self, name: str, key: str) -> dict:
        """What `key` records of its configuration and code (for its done marker or work folder)."""
        return self._records.get((name, key), {})

    def path(self, name: str, key: str) -> Path:
        return self.root / name / key

    def problem(self, name: str, key: str) -> str | None:
        """None when the stage is complete and intact; `ABSENT` when it was never finished;
        otherwise what is wrong with it, naming the file."""
        return stage_problem(self.path(name, key))

    def is_done(self, name: str, key: str) -> bool:
        return self.problem(name, key) is None

    def run(self, name: str, key: str, build: Callable[[Path], dict | None]) -> Path:
        """Return the finished stage directory, building it with `build(tmp_dir)` if needed.

        `build` may return a small JSON-able dict recorded in the done marker (`info`).
        """
        final = self.path(name, key)
        if stage_problem(final) is None:
            self.reused.append(f"{name}/{key}")
            return final
        with self.lock(name, key):
            return self._build(name, key, final, build)

    def _build(self, name: str, key: str, final: Path, build) -> Path:
        problem = stage_problem(final)   # again, under the lock: another worker may have just finished it
        if problem is None:
            self.reused.append(f"{name}/{key}")
            return final
        if problem != ABSENT:
            say(f"stage {name}/{key[:12]}: {problem}; recomputing this stage")
            self.repaired.append(f"{name}/{key}")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{key}.tmp-{unique_suffix()}"
        tmp.mkdir()
        try:
            info = {**(build(tmp) or {}), **self.record(name, key)}
            write_marker(tmp, info)
            install_dir(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)   # gone already unless build or install failed
        self.computed.append(f"{name}/{key}")
        return final

    @contextlib.contextmanager
    def lock(self, name: str, key: str):
        """Hold the lock of one stage key: a second process (a worker of the same run) waits
        for the first to finish that stage, then reuses it, instead of computing it twice.
        `flock`, released by the kernel however the holder ends (kill -9 included)."""
        import fcntl

        path = self.out / LOCKS_DIR / f"{name}-{key}.lock"
        held = str(path.resolve())
        if held in _HELD:     # re-entrant: flock on a second descriptor would wait for ourselves
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            _HELD.add(held)
            try:
                yield
            finally:
                _HELD.discard(held)

    def count(self, name: str, key: str, *, reused: bool) -> None:
        """Count a stage that keeps its own files (SFT, reference log-probs, training)."""
        (self.reused if reused else self.computed).append(f"{name}/{key}")

    def info(self, name: str, key: str) -> dict:
        marker = json.loads((self.path(name, key) / DONE_MARKER).read_text())
        for recorded in (FILES_KEY, "config_key", "code"):
            marker.pop(recorded, None)
        return marker

    def work_dir(self, name: str, key: str) -> Path:
        """A persistent (non-atomic) directory for work that resumes itself, such as training."""
        path = self.root / name / key
        path.mkdir(parents=True, exist_ok=True)
        record = self.record(name, key)
        if record and not (path / CODE_FILE).exists():   # what made it, for verify and --reuse-stale
            text = json.dumps(record, sort_keys=True)
            atomic_write(path / CODE_FILE, lambda tmp: tmp.write_text(text))
        return path

    def clean_leftovers(self) -> list[Path]:
        """Remove temporary and set-aside folders and files of killed stages; returns them.
        Call only while holding the folder's lock (another run's temporaries are live)."""
        removed = leftovers(self.out)
        for path in removed:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return removed


def read_record(entry: Path) -> dict:
    """A stage's recorded configuration key and code (its done marker's, or a work folder's
    code file); {} for a stage made before code was recorded, or unreadable."""
    for name in (DONE_MARKER, CODE_FILE):
        try:
            data = json.loads((entry / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "code" in data:
            return {"config_key": data.get("config_key"), "code": data["code"]}
    return {}


def write_marker(folder: Path, info: dict) -> None:
    """The done marker, last: the stage's own info plus the manifest of every other file."""
    marker = {**info, FILES_KEY: build_manifest(folder, exclude=(DONE_MARKER,))}
    path = folder / DONE_MARKER
    with open(path, "w") as fh:
        fh.write(json.dumps(marker, sort_keys=True, default=str))
        fh.flush()
        os.fsync(fh.fileno())


def stage_problem(folder: Path) -> str | None:
    marker = folder / DONE_MARKER
    if not marker.exists():
        return ABSENT
    try:
        data = json.loads(marker.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        return f"{DONE_MARKER} is damaged ({type(err).__name__})"
    files = data.get(FILES_KEY)
    if files is None:
        return None      # finished before manifests existed: trusted, as it was then
    problems = check_manifest(folder, files)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return problems[0] + more
    return None


def install_dir(tmp: Path, final: Path) -> None:
    """Rename the complete `tmp` to `final`. If `final` exists and is intact (another process
    finished the same stage first), keep it and drop `tmp`; if it is damaged, rename it aside
    first. `final` is never removed before a complete directory can take its place."""
    for _ in range(10):
        try:
            os.rename(tmp, final)      # replaces only a missing (or empty) directory
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        if stage_problem(final) is None:
            return                     # the other process's copy is as good as ours
        aside = final.with_name(f".{final.name}.damaged-{unique_suffix()}")
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            continue                   # someone else moved it: try again
        shutil.rmtree(aside, ignore_errors=True)
    raise BenchError(f"could not put stage {final} in place: other processes keep replacing it")


def leftovers(out: Path) -> list[Path]:
    """Temporary or set-aside entries of killed stages, checkpoints and caches under `out/stages`."""
    root = Path(out) / "stages"
    if not root.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in list(dirnames) + filenames:
            if any(m in name for m in LEFTOVER_MARKERS) or name.endswith(".tmp"):
                found.append(Path(dirpath) / name)
                if name in dirnames:
                    dirnames.remove(name)   # do not descend into a folder that goes as a whole
    return sorted(found)


# ---------------------------------------------------------------- one run per results folder
class FolderLock:
    """An exclusive lock on a results folder, held for a whole `run`.

    `flock` on `<out>/.prefbench.lock`: the kernel releases it when the holder exits, however
    it exits (kill -9 included), so a stale lock cannot block a folder. A second run stops at
    once with one line naming the holder (pid, host, start time, command).

    The holder's line is complete before its lock exists: each process writes its own line
    (`.locks/holder-<pid>`, by rename) before it asks for the lock, and a refused process asks
    the kernel which pid holds the lock (/proc/locks) and reads that pid's line. So the line
    named is never half written, never a finished run's, and never missing (where the kernel
    does not say, as off Linux, the newest line of a live pid is taken)."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_FILE
        self.line_file = Path(out) / LOCKS_DIR / f"holder-{os.getpid()}"
        self.fh = None

    def __enter__(self):
        import fcntl

        command = " ".join(sys.argv[:1] + sys.argv[1:3])
        line = (f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                f"{command}")
        self.line_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.line_file, lambda tmp: tmp.write_text(line))
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                self.line_file.unlink(missing_ok=True)
                fh.close()
                raise
            holder = self.holder(fh)
            if _flock_holder(fh.fileno()) != os.getpid():   # this very process's line stays
                self.line_file.unlink(missing_ok=True)
            fh.close()
            raise BenchError(f"{self.path.parent} is in use by another run ({holder}); wait for it to finish "
                             "or give this run another --out") from None
        for path in self.line_file.parent.glob("holder-*"):   # lines of killed holders
            pid = path.name.partition("-")[2]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                path.unlink(missing_ok=True)
        fh.seek(0)
        fh.truncate()
        fh.write(line)     # also here, for a person who looks (the refusal reads the line file)
        fh.flush()
        self.fh = fh
        return self

    def holder(self, fh) -> str:
        """The line of the process holding the lock on `fh`'s file."""
        pid = _flock_holder(fh.fileno())
        if pid is not None:
            try:
                return (self.line_file.parent / f"holder-{pid}").read_text().strip()
            except OSError:
                return f"pid {pid} on {socket.gethostname()}: {_command_of(pid)}"
        lines = sorted(self.line_file.parent.glob("holder-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in lines:     # no /proc/locks: the newest line of a live process
            pid = path.name.partition("-")[2]
            if pid.isdigit() and _alive(int(pid)):
                return path.read_text().strip()
        return "a process this system does not name"

    def __exit__(self, *exc):
        if self.fh is not None:
            self.line_file.unlink(missing_ok=True)   # before the release: a later holder writes its own
            self.fh.close()      # closing releases the flock
            self.fh = None
        return False


def _flock_holder(fd: int) -> int | None:
    """The pid holding a flock on the file open at `fd`, from the kernel (/proc/locks, Linux)."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device and fields[4].isdigit():
            return int(fields[4])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "(command unknown)"

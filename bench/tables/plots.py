"""Plots of a results folder (matplotlib, Agg backend, PNG).

Each function returns the Path it wrote, or None when there is nothing to plot (a suite
without a reward model has no win rate; a suite that does not sweep ADPO's k or m has no
granularity plot), so callers never have to guess which plots exist.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.tables import columns  # noqa: E402
from bench.tables.cells import failed_run_ids  # noqa: E402
from bench.tables.leaderboard import metric_keys  # noqa: E402
from bench.tables.results import REFERENCE, metric_info  # noqa: E402

DRIFT_KEY = "logratio/chosen"   # the trainer's train_log.jsonl field for mean r_w
# The y-axis of the trade-off plots, the first the folder has: a verifier first (a learned reward
# model can reward an artefact, length included, that these plots are meant to expose).
TRADE_OFF_Y = (("gold", "accuracy"), ("gold", "win_rate_vs_reference"), ("reward_model", "lc_win_rate_vs_reference"),
               ("reward_model", "win_rate_vs_reference"))


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
    """Mean chosen log-ratio r_w of the training batches over training steps, one line per
    objective (mean over seeds). These are the trainer's logged batches, not the held-out pairs
    of the leaderboard's drift columns, and the title says so; every objective not drawn is
    named under the plot with the reason (a reference-free objective logs no r_w)."""
    if runs_df is None or "train_log" not in runs_df:
        return None
    failed = failed_run_ids(runs_df)
    curves: dict[str, list[pd.DataFrame]] = {}
    absent: dict[str, str] = {}
    for _, run in runs_df.iterrows():
        label, log = str(run["label"]), run["train_log"]
        if str(run.get("objective", "")) == REFERENCE:
            continue
        if str(run["run_id"]) in failed:
            absent.setdefault(label, "failed")
            continue
        if not isinstance(log, str) or not log:
            absent.setdefault(label, "no training log")
            continue
        path = Path(log) if Path(log).is_absolute() or base_dir is None else base_dir / log
        if not path.is_file():
            absent.setdefault(label, "training log missing")   # not an error: the table is still valid
            continue
        points = _read_log(path)
        if len(points):
            curves.setdefault(label, []).append(points)
        else:
            absent.setdefault(label, "its log has no r_w (no reference pass)")
    if not curves:
        return None
    absent = {label: why for label, why in absent.items() if label not in curves}
    fig, ax = plt.subplots(figsize=(7, 4.5 + 0.16 * len(absent)))
    for label in sorted(curves):
        mean = pd.concat(curves[label]).groupby("step")["value"].mean()
        style = _style(styles, label)
        ax.plot(mean.index, mean.to_numpy(), label=label, linewidth=1.5, color=style["color"], marker=style["marker"],
                markevery=max(len(mean) // 8, 1), markersize=5, alpha=0.85)
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("training step")
    ax.set_ylabel("r_w (nats per response; batch mean, mean over seeds)")
    ax.set_title("Chosen log-ratio r_w on the training batches\n(the leaderboard's drift columns are of held-out pairs)",
                 fontsize=10)
    ax.legend(fontsize=7, loc="best")
    if absent:
        text = "Not drawn: " + "; ".join(f"{label}: {why}" for label, why in sorted(absent.items()))
        fig.text(0.01, 0.01, "\n".join(textwrap.wrap(text, 120)), fontsize=7, color="dimgrey", va="bottom")
        fig.tight_layout(rect=(0, 0.03 + 0.03 * len(absent), 1, 1))
        return _save(fig, out_path, layout=False)
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
    return np.clip(np.nan_to_num(np.vstack([v - lo, hi - v]), nan=0.0), 0.0, None)   # 0 within rounding


def _axis_label(key: tuple[str, str]) -> str:
    """A metric's display name with its unit, and which judge gave it when it is a reward model."""
    name = "/".join(key)
    unit = columns.short_unit(name)
    text = metric_info(*key).display + (f" ({unit})" if unit else "")
    return text + ("\nlearned reward model, may reward length" if key[0] == "reward_model" else "")


def _scatter(long: pd.DataFrame, x: tuple[str, str], xlabel: str, title: str, out_path: Path,
             styles: dict | None = None) -> Path | None:
    judge = next((j for j in TRADE_OFF_Y if not _pair_points(long, x, j).empty), None)
    if judge is None:
        return None
    points = _pair_points(long, x, judge)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, row in points.iterrows():
        one = points.loc[[label]]
        style = _style(styles, label)
        ax.errorbar(row["value_x"], row["value_y"], xerr=_errors(one, "x"), yerr=_errors(one, "y"),
                    fmt=style["marker"], color=style["color"], capsize=3, label=label, alpha=0.7, markersize=7)
    if judge[1].startswith("win_rate") or judge[1].startswith("lc_win_rate"):
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--", label="parity with the reference")
    else:
        ref = long[(long["objective"] == REFERENCE) & (long["scorer"] == judge[0]) & (long["metric"] == judge[1])]
        if len(ref):
            ax.axhline(float(ref["value"].iloc[0]), color="grey", linewidth=0.8, linestyle="--", label="the reference")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(_axis_label(judge))
    ax.set_title(f"{metric_info(*judge).display[:1].upper() + metric_info(*judge).display[1:]} {title}")
    ax.legend(fontsize=7, loc="best")
    return _save(fig, out_path)


def plot_winrate_vs_kl(long: pd.DataFrame, out_path: Path, styles: dict | None = None) -> Path | None:
    """Gold accuracy (else the first of :data:`TRADE_OFF_Y`) vs KL to the reference, one point per
    objective, error bars across seeds."""
    return _scatter(long, ("kl", "kl_to_reference"), _axis_label(("kl", "kl_to_reference")), "vs KL to the reference",
                    out_path, styles)


def plot_winrate_vs_length(long: pd.DataFrame, out_path: Path, styles: dict | None = None) -> Path | None:
    """Gold accuracy (else the first of :data:`TRADE_OFF_Y`) vs mean response tokens: a rising
    diagonal under a reward model is length exploitation."""
    return _scatter(long, ("length", "mean_tokens"), _axis_label(("length", "mean_tokens")), "vs answer length",
                    out_path, styles)


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


GRANULARITY_TARGETS = (("gold", "accuracy"), ("reward_model", "lc_win_rate_vs_reference"),
                       ("reward_model", "win_rate_vs_reference"))


def plot_granularity_sweep(board: pd.DataFrame, results_df: pd.DataFrame, out_path: Path,
                           styles: dict | None = None) -> Path | None:
    """ADPO's granularity against the baseline: static windows of k tokens (larger = coarser) and
    adaptive m segments (larger = finer) on separate x-axes (log2), one row per metric. The y-axis
    is Δ vs the baseline with its paired 95% interval (by seed and prompt), which shows an effect
    that the levels' overlapping intervals hide; without a baseline, the levels."""
    grid = granularity_points(results_df)
    if grid["x"].nunique() < 2:
        return None   # no sweep: one point is not a curve
    comp, baseline = board.attrs.get("comparisons"), board.attrs.get("baseline")
    paired = baseline is not None and comp is not None and not comp.empty
    present = set(comp["scorer"] + "/" + comp["metric"]) if paired else set(board.columns)
    targets = [key for key in GRANULARITY_TARGETS if "/".join(key) in present][:2]
    families = sorted(grid["family"].unique())
    if not targets:
        return None
    fig, axes = plt.subplots(len(targets), len(families), figsize=(4.2 * len(families), 3.2 * len(targets)),
                             squeeze=False)
    for row, key in enumerate(targets):
        name = "/".join(key)
        if paired:
            sub = comp[(comp["scorer"] == key[0]) & (comp["metric"] == key[1])].set_index("label")
            values = sub[["delta", "ci_low", "ci_high"]].set_axis(["value", "low", "high"], axis=1)
        else:
            values = board.set_index("label")[[name, f"{name}:ci_low", f"{name}:ci_high"]].set_axis(
                ["value", "low", "high"], axis=1)
        for col, family in enumerate(families):
            ax = axes[row, col]
            pts = grid[(grid["family"] == family) & grid["label"].isin(values.index)].sort_values("x")
            vals = values.reindex(pts["label"])
            ax.plot(pts["x"], vals["value"], color="lightgrey", linewidth=1, zorder=1)
            for (_, p), (_, v) in zip(pts.iterrows(), vals.iterrows()):
                style = _style(styles, p["label"])
                err = np.clip(np.nan_to_num([[v["value"] - v["low"]], [v["high"] - v["value"]]], nan=0.0), 0.0, None)
                ax.errorbar(p["x"], v["value"], yerr=err, fmt=style["marker"], color=style["color"], capsize=3,
                            label=p["label"], markersize=6)
            if paired:
                ax.axhline(0.0, color="grey", linestyle="--", linewidth=0.8, label=f"baseline {baseline}")
            ax.set_xscale("log", base=2)
            letter = "k" if "(k)" in family else "m"
            ax.set_xlabel(f"{letter}: " + ("window of k tokens (larger = coarser)" if letter == "k"
                                          else "m segments per response (larger = finer)"), fontsize=8)
            if len(pts):
                ax.set_xticks(sorted(pts["x"].unique()), [f"{x:g}" for x in sorted(pts["x"].unique())])
            unit = columns.short_unit(name)
            ax.set_ylabel(("Δ " if paired else "") + metric_info(*key).display + (f" ({unit})" if unit else ""),
                          fontsize=8)
            ax.set_title(f"ADPO {family.split(' ')[0]}", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
    fig.suptitle(f"ADPO granularity: Δ vs {baseline} (paired 95% bootstrap over seeds and prompts)" if paired
                 else "ADPO granularity (levels; no baseline to pair with)", fontsize=10)
    return _save(fig, out_path)


def _span(values: np.ndarray) -> tuple[float, float]:
    """An x-range around the finite values, padded by 8% (a point range: ±1e-3 around it)."""
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    pad = 0.08 * (high - low) or 1e-3
    return low - pad, high + pad


def plot_deltas(board: pd.DataFrame, out_path: Path, styles: dict | None = None) -> Path | None:
    """Δ vs the baseline with its paired 95% interval, one panel per leaderboard metric, one
    row per objective in its colour; filled markers are significant after Holm, hollow ones are
    not. Each panel is scaled to the trained objectives; a control or the reference off that
    scale is an arrow at the edge."""

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
    objective_of = dict(zip(board["label"].astype(str), board["objective"].astype(str)))
    # the reference (one untrained policy, often far from every objective) is scaled like a control
    control = np.array([columns.is_control(lab, objective_of.get(lab, "")) or objective_of.get(lab) == REFERENCE
                        for lab in labels])
    for ax, key in zip(axes.ravel(), keys):
        sub = comp[comp["key"] == key].set_index("label").reindex(labels)
        d, lo, hi = (sub[c].to_numpy(float) for c in ("delta", "ci_low", "ci_high"))
        sig = sub["significant"].fillna(False).to_numpy(bool)
        # The x-range is the objectives' (the controls' and the reference's Δ, e.g. nll's, can be
        # 100x theirs and squash every objective to a dot); one beyond it is an arrow at the edge,
        # with its value.
        span = _span(np.concatenate([d[~control], lo[~control], hi[~control], [0.0]]))
        ax.set_xlim(*span)
        inside = ~control | ((d >= span[0]) & (d <= span[1]))
        # clipped at 0: an interval of equal values can sit a rounding error off its mean
        err = np.clip(np.nan_to_num(np.vstack([d - lo, hi - d]), nan=0.0), 0.0, None)
        colours = [_style(styles, lab)["color"] for lab in labels]
        for i in np.flatnonzero(inside):
            ax.errorbar(d[i], y[i], xerr=err[:, [i]], fmt="none", ecolor=colours[i], capsize=3)
        ax.scatter(d[inside & sig], y[inside & sig], c=[colours[i] for i in np.flatnonzero(inside & sig)], zorder=3,
                   label="Holm p < 0.05")
        ax.scatter(d[inside & ~sig], y[inside & ~sig], facecolors="white", zorder=3, label="not significant",
                   edgecolors=[colours[i] for i in np.flatnonzero(inside & ~sig)])
        for i in np.flatnonzero(~inside & np.isfinite(d)):
            right = d[i] > span[1]
            edge = span[1] if right else span[0]
            ax.plot([edge], [y[i]], marker=">" if right else "<", color=colours[i], markersize=6, zorder=3,
                    clip_on=False, linestyle="none")
            ax.annotate(f"{d[i]:+.3g} off scale", (edge, y[i]), xytext=(-4 if right else 4, 5),
                        textcoords="offset points", ha="right" if right else "left", fontsize=6, color="dimgrey")
        ax.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
        unit = columns.short_unit(key)
        ax.set_title(columns.title(key) + (f" ({unit})" if unit else ""), fontsize=8)
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

"""Paper-ready leaderboards: "best" only where it means something, one number format per
column, rows in reading order, LaTeX floats that compile and fit a two-column page's
``table*``, an HTML page whose numbers never wrap at 1,600 px, and ``report --format``."""
from __future__ import annotations

import math
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from bench.tables import columns
from bench.tables.leaderboard import LEADERBOARD_METRICS, StatsSettings, leaderboard, write_settings
from bench.tables.render import render
from bench.tables.results import make_row, write_results

GOLD = "gold/accuracy"


def board_of(rows: dict[str, tuple[str, float, float, float]], key: str = GOLD) -> pd.DataFrame:
    """A leaderboard of one column: label -> (objective, mean, low, high)."""
    return pd.DataFrame([{"label": lab, "objective": obj, "seeds": 3, "failed": 0, key: m,
                          f"{key}:ci_low": lo, f"{key}:ci_high": hi} for lab, (obj, m, lo, hi) in rows.items()])


def test_best_is_marked_only_when_separated_and_never_for_controls_or_the_reference():
    separated = board_of({"reference": ("reference", 0.9, 0.85, 0.95), "dpo": ("dpo", 0.5, 0.45, 0.55),
                          "ipo": ("ipo", 0.7, 0.65, 0.75), "nll": ("nll", 0.95, 0.9, 0.99),
                          "control-lr0": ("dpo", 0.99, 0.98, 1.0)})
    assert columns.best_labels(separated, GOLD) == {"ipo"}       # not the reference, nll or the lr0 control
    overlapping = separated.copy()
    overlapping.loc[overlapping["label"] == "dpo", ["gold/accuracy", "gold/accuracy:ci_high"]] = [0.69, 0.72]
    assert columns.best_labels(overlapping, GOLD) == set()        # 0.70 inside the runner-up's interval
    tie = board_of({"dpo": ("dpo", 0.0, 0.0, 0.0), "ipo": ("ipo", 0.0, 0.0, 0.0)})
    assert columns.best_labels(tie, GOLD) == set()                # a tie at 0.000 is nobody's best
    lower = board_of({"dpo": ("dpo", 0.5, 0.45, 0.55), "ipo": ("ipo", 0.2, 0.1, 0.3)}, "drift/chosen_logp_down")
    assert columns.best_labels(lower, "drift/chosen_logp_down") == {"ipo"}   # lower is better
    raw = board_of({"dpo": ("dpo", 0.5, 0.45, 0.55), "ipo": ("ipo", 0.9, 0.85, 0.95)},
                   "reward_model/win_rate_vs_reference")
    assert columns.best_labels(raw, "reward_model/win_rate_vs_reference") == set()   # length-biased RM
    kl = board_of({"dpo": ("dpo", 5.0, 4.0, 6.0), "ipo": ("ipo", 1.0, 0.5, 1.5)}, "kl/kl_to_reference")
    assert columns.best_labels(kl, "kl/kl_to_reference") == set()                    # no direction


def test_numbers_have_one_format_per_column_and_noise_is_zero():
    assert columns.number(-3.73e-09, 3, sign=True) == "0.000"      # not "-3.73e-09" beside "+0"
    assert columns.number(-0.0004, 3) == "0.000"                   # no "-0.000"
    assert columns.number(0.0625, 3, sign=True) == "+0.062"
    assert columns.number(-1.5, 2, minus="\u2212") == "\u22121.50"
    assert columns.number(math.nan, 3) == "–"
    board = pd.DataFrame({"length/mean_tokens": [40.0, 12.5], "drift/logratio_chosen_per_token": [0.0599, -0.004],
                          GOLD: [0.5, 0.25]})
    assert columns.decimals(board, "length/mean_tokens") == 1               # 3 significant figures of 40
    assert columns.decimals(board, "drift/logratio_chosen_per_token") == 4  # ... of 0.0599
    assert columns.decimals(board, GOLD) == 3                               # a share: always 3


def test_rows_read_reference_baseline_objectives_controls():
    objective_of = {"reference": "reference", "control-lr0": "dpo", "nll": "nll", "adpo[k=1]": "adpo",
                    "dpo[beta=0.1]": "dpo", "ipo": "ipo"}
    assert columns.row_order(objective_of, objective_of, "dpo[beta=0.1]") == [
        "reference", "dpo[beta=0.1]", "adpo[k=1]", "ipo", "control-lr0", "nll"]


# ------------------------------------------------------------------ a default-suite-sized folder

LABELS = {"dpo[beta=0.1]": "dpo", "adpo[beta=0.1,granularity=adaptive,m=4]": "adpo",
          "adpo[beta=0.1,granularity=static,k=1]": "adpo", "adadpo[beta=0.1,clip=2.0]": "adadpo",
          "ipo[beta=0.1]": "ipo", "simpo[beta=2.0,gamma_beta_ratio=0.25]": "simpo", "nll": "nll",
          "control-lr0": "dpo"}


def wide_folder(tmp_path):
    """Every leaderboard column and an lm-eval task, 9 labels of the default suite's length, 4 seeds,
    values of every sign and size (a 16-column table is what has to fit)."""
    rng = np.random.default_rng(0)
    rows, runs = [], []
    keys = LEADERBOARD_METRICS + [("lm_eval:arith_qa", "acc_norm")]
    for label, objective in {"reference": "reference", **LABELS}.items():
        for seed in ([0] if objective == "reference" else range(4)):
            run_id = f"{label}-{seed}"
            for scorer, metric in keys:
                scale = {"length": 40.0, "kl": 3.0, "drift": -1.5, "reward_model": 0.8}.get(scorer, 0.6)
                value = scale * rng.uniform(0.05, 1.0) if metric != "mean_reward" else -0.04 * rng.uniform(0.5, 1)
                if scorer == "drift" and metric == "chosen_logp_down":
                    value = rng.uniform(0.1, 0.9)
                rows.append(make_row(suite="smoke", run_id=run_id, objective=objective, params={}, seed=seed,
                                     scorer=scorer, metric=metric, value=value, ci_low=value - 0.05,
                                     ci_high=value + 0.05, n=500))
            runs.append({"suite": "smoke", "run_id": run_id, "objective": objective, "label": label,
                         "params": {}, "seed": seed, "status": "ok", "git_revision": "0123456789abcdef"})
    results = pd.DataFrame(rows)
    results["label"] = results["run_id"].str.rsplit("-", n=1).str[0]
    runs = pd.DataFrame(runs)
    write_results(tmp_path, results, runs)
    write_settings(tmp_path, StatsSettings("dpo[beta=0.1]", 200, 0))
    return results, runs


def test_rows_of_a_suite_leaderboard(tmp_path):
    results, runs = wide_folder(tmp_path)
    board = leaderboard(results, runs, None, StatsSettings("dpo[beta=0.1]", 200, 0))
    labels = list(board["label"])
    assert labels[:2] == ["reference", "dpo[beta=0.1]"] and labels[-2:] == ["control-lr0", "nll"]


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex is not installed (apt-get install texlive-latex-recommended): "
                           "the LaTeX tables are not compiled")
def test_latex_floats_compile_and_fit_a_two_column_table_star(tmp_path):
    """Mutation seen failing: \\tabcolsep 4pt -> 12pt in render_latex (Overfull \\hbox: 10 pt and 30 pt too wide)."""
    from bench.tables.report import write_report_files

    wide_folder(tmp_path)
    _, written = write_report_files(tmp_path, formats=["latex"])
    tex = written["latex"].read_text()
    assert re.search(r"\\label\{tab:smoke-quality\}", tex) and r"\label{tab:smoke-delta-drift}" in tex
    assert "$-" in tex and not re.search(r"(?<![$^_{\\])-\d", tex.split(r"\begin{tabular}")[1])   # true minus
    doc = tmp_path / "paper.tex"
    # A two-column paper page (US letter, 0.75 in margins: \textwidth 7 in = 505 pt).
    doc.write_text("\\documentclass[twocolumn]{article}\n\\usepackage[margin=0.75in]{geometry}\n"
                   "\\usepackage{booktabs}\n\\begin{document}\n\\input{leaderboard.tex}\nText.\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert done.returncode == 0, log[-2000:]
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox \(([\d.]+pt) too wide\)", log)
    assert tex.count(r"\begin{table*}") == 4


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

# Counts the numbers (.m: a mean, .ci: an interval) laid out on more than one line.
_PROBE = """<script>
window.addEventListener('load', function(){
  var wrapped = 0, total = 0;
  document.querySelectorAll('td .m, td .ci').forEach(function(el){
    total += 1;
    var style = getComputedStyle(el), line = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.4;
    if (el.getClientRects().length > 1 || el.getBoundingClientRect().height > 1.5 * line) wrapped += 1;
  });
  document.body.setAttribute('data-probe', wrapped + '/' + total + '/' + document.documentElement.scrollWidth);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium (apt-get install chromium): "
                                              "the HTML page is not laid out")
def test_html_numbers_never_wrap_at_1600_px(tmp_path):
    """Mutation seen failing: 'white-space:nowrap' removed from the cells' style."""
    from bench.tables.report import write_report_files

    wide_folder(tmp_path)
    _, written = write_report_files(tmp_path, formats=["html"])
    page = written["html"].read_text()
    assert "<h1>prefbench leaderboard: smoke</h1>" in page and "0123456789ab" in page and "<dt>KL to ref</dt>" in page
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _PROBE + "</body>"))
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1600,1000",
                           "--virtual-time-budget=3000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'data-probe="(\d+)/(\d+)/(\d+)"', done.stdout)
    assert found, done.stderr[-2000:]
    wrapped, total, width = map(int, found.groups())
    assert total > 200 and wrapped == 0, (wrapped, total)
    assert width <= 1600, width        # fits the window: no sideways scrolling


def test_report_format_writes_only_its_file(tmp_path):
    from click.testing import CliRunner

    from bench.cli import main

    wide_folder(tmp_path)
    before = {p.name for p in tmp_path.iterdir()}
    done = CliRunner().invoke(main, ["report", str(tmp_path), "--format", "latex"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("% prefbench leaderboard of suite smoke")
    assert {p.name for p in tmp_path.iterdir()} - before == {"leaderboard.tex"}

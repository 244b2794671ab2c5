"""The command line: thin wrappers over the library; user errors become one line, exit 2.

Heavy imports (torch, transformers, lm-eval) happen inside the commands so that
`--help` and `objectives` answer at once.
"""
from __future__ import annotations

import atexit
import functools
import gc
import json
import os
import sys
from pathlib import Path

import click

from bench.errors import BenchError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130      # the shell's code for a process ended by Ctrl-C


def one_line_errors(fn):
    """Show a BenchError as one line on stderr (exit 2) instead of a traceback.

    Anything else that escapes a command is shown as one line too, with the traceback
    written to a log file whose path the line names (the screen stays readable; the
    detail is kept for a bug report)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BenchError as err:
            for line in getattr(err, "lines", None) or [str(err)]:   # several problems: one line each
                click.echo(f"error: {line}", err=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt as err:   # Ctrl-C / SIGTERM: one line saying what was kept and how to go on
            text = str(err) or "interrupted; finished stages are kept; run the same command again to go on"
            click.echo(f"stopped: {text}", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as err:  # noqa: BLE001 - the last guard before a traceback on screen
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            click.echo(f"error: {type(err).__name__}: {first} ({_write_crash_log(fn.__name__)})", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


def _write_crash_log(command: str) -> str:
    """Write the current traceback to a log file; returns the words naming it (or why it could not)."""
    import tempfile
    import time
    import traceback

    folder = Path(tempfile.gettempdir()) / "prefbench-logs"
    path = folder / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(traceback.format_exc())
    except OSError as err:  # a full or read-only disk must not turn into a second traceback
        return f"the traceback could not be written to {path}: {err.strerror or err}"
    return f"traceback in {path}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """prefbench: train preference objectives with one trainer, generate, score, compare."""
    # The process ends with its command. Frozen at exit, what is still alive is left out of the
    # interpreter's last collection, which otherwise walks every object of the loaded stack:
    # ~1.8 s after a suite here (the operating system takes the memory back either way).
    atexit.register(gc.freeze)


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a suite field, e.g. --set training.max_steps=10 (repeatable; default: none).",
)


@main.command()
@click.argument("suite", type=click.Path(dir_okay=False))
@set_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder (default results/<suite name>/).")
@click.option("--only", multiple=True, metavar="NAME",
              help="Run only objectives whose label or name matches (repeatable; default: all).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--reuse-stale", is_flag=True,
              help="Reuse stages made by other code (of the same configuration) instead of computing them "
                   "again; runs.parquet records which. Evaluations are always of this code.")
@click.option("--executor", type=click.Choice(["inprocess", "local", "ray", "slurm"]), default=None,
              help="Where the runs train and evaluate (default: the suite's executor.kind, else inprocess).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="local: worker processes; ray, slurm: runs at once (the suite's executor.workers).")
@one_line_errors
def run(suite, overrides, out_dir, only, quiet, reuse_stale, executor, workers):
    """Train every objective of SUITE, generate, score, and write the results and leaderboard."""
    import signal

    from bench.run.runner import run_suite

    # SIGTERM (a scheduler, `kill`) stops like Ctrl-C: temporaries removed, training state saved.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    summary = run_suite(suite, overrides=list(overrides), out_dir=out_dir, only=list(only), progress=not quiet,
                        executor=executor, workers=workers, reuse_stale=reuse_stale)
    click.echo(summary.text())
    sys.exit(1 if summary.failed or summary.stage_failures else 0)


@main.command()
@click.argument("suite", type=click.Path(dir_okay=False))
@set_option
@one_line_errors
def validate(suite, overrides):
    """Check SUITE completely (schema, objectives, data, models, lm-eval tasks) without training."""
    from bench.suite.validate import validate_suite

    click.echo(str(validate_suite(suite, list(overrides))))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def objectives(as_json):
    """List every objective with its hyperparameters, defaults, reference need and paper."""
    from bench.cli_objectives import objectives_text
    from trainers.objectives import describe_objectives

    described = describe_objectives()
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    click.echo(objectives_text(described))


@main.command()
@click.argument("results_dir", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["md", "latex", "html", "csv"]), default=None,
              help="Print this format and write only its leaderboard file (no comparisons.csv, no plots). "
                   "Default: print md and write every leaderboard file, comparisons.csv and the plots.")
@click.option("--compare-to", "compare_to", default=None, metavar="LABEL",
              help="Baseline of the paired comparisons (a label or objective). Default: the suite's "
                   "scoring.compare_to. Another baseline is written to RESULTS_DIR/compare-to-LABEL/, "
                   "leaving the run's own files as they are.")
@click.option("--columns", "paper_columns", default=None, metavar="KEY,KEY...",
              help="The LaTeX table's columns, as leaderboard.csv names them (e.g. gold/accuracy,"
                   "length/mean_tokens). Default: a quality table and a length-and-drift table.")
@one_line_errors
def report(results_dir, fmt, compare_to, paper_columns):
    """Print the leaderboard of a results folder (and refresh its report files and plots)."""
    from bench.tables.report import report_text

    chosen = [k.strip() for k in paper_columns.split(",") if k.strip()] if paper_columns else None
    text, where = report_text(results_dir, fmt, compare_to=compare_to, only=fmt is not None, paper_columns=chosen)
    click.echo(text, nl=False)
    if Path(where) != Path(results_dir):
        click.echo(f"wrote the comparison with {compare_to} to {where}", err=True)


@main.command()
@click.argument("results_dir", type=click.Path(file_okay=False))
@one_line_errors
def verify(results_dir):
    """Check every cached file of RESULTS_DIR against its manifest, without running anything.

    Exit 0 when all is intact, 1 naming each damaged stage (the next `run` recomputes it)."""
    from bench.run.verify import verify as run_verify

    report = run_verify(results_dir)
    click.echo(report.text())
    sys.exit(0 if report.ok else 1)


# The regression gate's `baseline` and `check` live with the gate (bench/gate/cli.py).
from bench.gate.cli import register as _register_gate  # noqa: E402

_register_gate(main, one_line_errors)


@main.group()
def perf():
    """Throughput benchmarks against a peer run side by side (last line: JSON)."""


@perf.command("train")
@click.option("--steps", default=20, show_default=True, help="Optimiser steps per trainer.")
@click.option("--batch-size", default=8, show_default=True, help="Pairs per step.")
@click.option("--max-length", default=128, show_default=True, help="Tokens per sequence (prompt and response).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random data and weights.")
@click.option("--repeats", default=1, show_default=True, help="Interleaved repeats; the fastest of each is kept.")
@click.option("--profile", "profile_dir", type=click.Path(file_okay=False), default=None,
              help="Run the harness under cProfile, write its profile here and print where its time goes "
                   "(its times are then slower than the peers': read the phases, not the ratio).")
def perf_train(steps, batch_size, max_length, seed, repeats, profile_dir):
    """Harness trainer vs TRL's DPOTrainer (default and precomputed reference): tokens/s, memory."""
    from bench.perf.train import run as run_perf

    result = run_perf(steps=steps, batch_size=batch_size, max_length=max_length, seed=seed, repeats=repeats,
                      profile=profile_dir, modes=("harness",) if profile_dir else None)
    click.echo(json.dumps(result))


@perf.command("mfu")
@click.option("--size", type=click.Choice(["qwen2-0.5b", "qwen2-tiny"]), default="qwen2-0.5b", show_default=True,
              help="Qwen2-architecture shape built from its config (random weights); tiny is for CPU checks.")
@click.option("--seq-len", default=1024, show_default=True, help="Tokens per sequence (half prompt, half response).")
@click.option("--batch-size", default=8, show_default=True, help="Sequences per step.")
@click.option("--steps", default=12, show_default=True, help="Optimiser steps, the warm-up steps included.")
@click.option("--warmup-steps", default=2, show_default=True, help="Leading steps left out of the timing.")
@click.option("--gradient-checkpointing", is_flag=True, help="Recompute activations in the backward pass.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights and tokens.")
@one_line_errors
def perf_mfu(size, seq_len, batch_size, steps, warmup_steps, gradient_checkpointing, seed):
    """Harness trainer tokens/s and MFU (6N/2N FLOPs against the device's measured matmul peak)."""
    from bench.perf.mfu import run as run_perf

    run_perf(size=size, seq_len=seq_len, batch_size=batch_size, steps=steps, warmup_steps=warmup_steps,
             gradient_checkpointing=gradient_checkpointing, seed=seed)


@perf.command("grid")
@click.option("--suite", "suite_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Suite to time (default: suites/ci_smoke.yaml).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Worker processes of the local executor's run.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="An empty folder for the runs (default: a new temporary one).")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1),
              help="Pairs of runs (in-process, local), alternated; the ratio is the medians'.")
@one_line_errors
def perf_grid(suite_path, workers, out_dir, repeats):
    """The suite in-process, then on N local workers, from the same precomputed shared stages: times, ratio."""
    from bench.perf.grid import CI_SUITE, run as run_perf

    result = run_perf(suite=suite_path or CI_SUITE, workers=workers, out=out_dir, repeats=repeats, say=click.echo)
    sys.exit(0 if result["results_identical"] else 1)


@perf.command("generate")
@click.option("--num-prompts", default=64, show_default=True, help="Prompts generated for.")
@click.option("--max-new-tokens", default=64, show_default=True, help="Tokens generated per prompt.")
@click.option("--batch-size", default=64, show_default=True, help="Prompts per batch of the hf backend.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random prompts and weights.")
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(min=1),
              help="Alternated rounds of the hf backend and the loop; the fastest of each is kept.")
def perf_generate(num_prompts, max_new_tokens, batch_size, seed, repeats):
    """Batched hf backend vs a one-prompt-at-a-time generate loop (and vLLM where present)."""
    from bench.perf.generate import run as run_perf

    result = run_perf(num_prompts=num_prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                      repeats=repeats)
    click.echo(json.dumps(result))


@perf.command("all")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for perf_all.json, perf_all.md (the table of docs/PERFORMANCE.md) and the grid's runs.")
@click.option("--train-repeats", default=5, show_default=True, type=click.IntRange(min=1),
              help="Rounds of perf train (harness and both TRL configurations alternated each round).")
@click.option("--grid-suite", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Suite for perf grid (default: suites/ci_smoke.yaml).")
@click.option("--grid-repeats", default=1, show_default=True, type=click.IntRange(min=1),
              help="Alternated pairs (in-process, local workers) of perf grid.")
@click.option("--skip", multiple=True, type=click.Choice(["train", "generate", "grid", "mfu"]),
              help="Leave a benchmark out (repeatable); mfu runs only where a GPU is present anyway.")
@click.option("--publish", is_flag=True,
              help="Also copy the output to docs/perf/ and write the table into the generated block of docs/PERFORMANCE.md.")
@click.option("--finish-partial", is_flag=True,
              help="Measure nothing: finish the stopped run in --out from its perf_all.partial.json (the "
                   "benchmarks it had not finished marked as not run).")
@click.option("--publish-only", is_flag=True, help="Measure nothing: publish the finished output already in --out.")
@one_line_errors
def perf_all(out_dir, train_repeats, grid_suite, grid_repeats, skip, publish, finish_partial, publish_only):
    """Every benchmark; one JSON and the performance table (markdown, docs/PERFORMANCE.md) from it."""
    from bench.perf.all import finish_partial as finish, publish as publish_output, run_all

    publish = publish or publish_only
    if publish_only:
        if not (Path(out_dir) / "perf_all.json").exists():
            raise BenchError(f"--publish-only: {out_dir} holds no perf_all.json")
    elif finish_partial:
        finish(out_dir)
    else:
        run_all(out_dir, train_repeats=train_repeats, grid_suite=grid_suite, grid_repeats=grid_repeats, skip=skip,
                say=click.echo)
    click.echo((Path(out_dir) / "perf_all.md").read_text())
    if publish:
        for path in publish_output(out_dir):
            click.echo(f"wrote {path}")


@perf.command("check")
@click.option("--floors", "floors_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Floors file (default: suites/baselines/perf.yaml).")
@click.option("--from", "from_json", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Check a perf_all.json instead of measuring.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1),
              help="Rounds of the training and generation benchmarks measured for the check (best of each).")
@click.option("--slowdown-trainer", default=1.0, show_default=True,
              help="Inject a fault: each harness training step this many times as long (the check must fail at 2).")
@click.option("--slowdown-generate", default=1.0, show_default=True,
              help="Inject a fault: the hf backend's generation this many times as long.")
@click.option("--slowdown-vllm", default=1.0, show_default=True,
              help="Inject a fault: vLLM's generation this many times as long (where vLLM runs).")
@one_line_errors
def perf_check(floors_path, from_json, repeats, slowdown_trainer, slowdown_generate, slowdown_vllm):
    """Side-by-side ratios against the floors kept with the baselines; exit 1 naming each one below."""
    from bench.perf.check import FLOORS, check, load_floors, measure

    floors = load_floors(floors_path or FLOORS)
    if from_json:
        result = json.loads(Path(from_json).read_text())
    else:
        result = measure(floors=floors, repeats=repeats, slowdown_trainer=slowdown_trainer,
                         slowdown_generate=slowdown_generate, slowdown_vllm=slowdown_vllm)
    outcome = check(result, floors)
    for line in outcome.passed:
        click.echo(f"ok {line}")
    for line in outcome.failed:
        click.echo(f"PERF REGRESSION {line}")
    click.echo(f"perf check: {len(outcome.passed) + len(outcome.failed)} ratios, {len(outcome.failed)} below their "
               f"floor (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)")
    sys.exit(0 if outcome.ok else 1)


if __name__ == "__main__":
    main()

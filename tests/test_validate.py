"""`validate`: schema plus data, models and lm-eval tasks, without training; one-line failures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.errors import NetworkRequiredError, SuiteError
from bench.validate import validate_suite

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "suites"
BAD = Path(__file__).resolve().parent / "bad_suites"
MINIMAL = "name: t\nseeds: [0]\nobjectives:\n  - name: dpo\n"
VALIDATE_FAULTS = sorted(p for p in BAD.glob("*.yaml") if "# stage: validate" in p.read_text())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_ci_smoke_validates_with_a_run_table():
    summary = validate_suite(SUITES / "ci_smoke.yaml")
    assert summary.suite == "ci_smoke"
    assert summary.num_runs == 9
    text = str(summary)
    assert text.splitlines()[0] == f"suite ci_smoke ({SUITES / 'ci_smoke.yaml'}): OK, 9 runs"
    assert "lm-eval: tasks arith_qa known" in text
    for run in summary.runs:
        assert run.run_id in text and run.label in text


def test_overrides_reach_the_summary():
    summary = validate_suite(SUITES / "ci_smoke.yaml", ["seeds=[0,1]", "scoring.lm_eval.tasks=[]"])
    assert summary.num_runs == 18
    assert "lm-eval: no tasks" in str(summary)


def test_hh_rlhf_needs_the_network_offline():
    with pytest.raises(NetworkRequiredError) as info:
        validate_suite(SUITES / "hh_rlhf.yaml")
    text = str(info.value)
    assert "\n" not in text and "hh_rlhf.yaml" in text and "data.path" in text and "network" in text


@pytest.mark.parametrize("path", VALIDATE_FAULTS, ids=lambda p: p.stem)
def test_bad_suite_fails_at_validate(path):
    expect = path.read_text().splitlines()[0].split("# expect:", 1)[1].strip()
    with pytest.raises(SuiteError) as info:
        validate_suite(path)
    assert str(path) in str(info.value) and expect in str(info.value)


def test_unknown_task_names_the_closest(tmp_path):
    path = write(tmp_path, MINIMAL + "scoring: {lm_eval: {tasks: [arc_easy, hellaswagg]}}\n")
    with pytest.raises(SuiteError, match=r"scoring.lm_eval.tasks\[1\]: unknown lm-eval task 'hellaswagg'; "
                                         r"closest known task: 'hellaswag'"):
        validate_suite(path)


def test_local_preference_file_is_read(tmp_path):
    rows = [{"prompt": f"Q{i}?", "chosen": " yes", "rejected": " no"} for i in range(5)] + [{"prompt": "only"}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = write(tmp_path, MINIMAL + "data: {source: preference, path: ./pairs.jsonl, eval_prompts: 1, drift_pairs: 1}\n")
    summary = validate_suite(path)
    assert f"data: {tmp_path / 'pairs.jsonl'}: 5 pairs readable, skipped" in str(summary)


def test_data_file_without_usable_rows_fails(tmp_path):
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "only"}\n')
    path = write(tmp_path, MINIMAL + "data: {source: preference, path: ./pairs.jsonl}\n")
    with pytest.raises(SuiteError, match="data.path: no usable pairs"):
        validate_suite(path)


def test_bad_builtin_task_option_names_data(tmp_path):
    path = write(tmp_path, MINIMAL + "data: {task_options: {length_confund: 0.5}}\n")
    with pytest.raises(SuiteError, match=r"suite.yaml: data: .*length_confund"):
        validate_suite(path)


def test_local_models_resolve_and_hub_models_need_network(tmp_path, tiny_model_dir, tiny_reward_model_dir):
    path = write(tmp_path, MINIMAL + f"model: {{policy: {tiny_model_dir}}}\n"
                           f"reward_model: {{kind: load, path: {tiny_reward_model_dir}}}\n")
    text = str(validate_suite(path))
    assert f"model.policy: {tiny_model_dir}" in text and f"reward_model.path: {tiny_reward_model_dir}" in text
    with pytest.raises(NetworkRequiredError, match=r"suite.yaml: reward_model.path: .*no network"):
        validate_suite(path, ["reward_model.path=OpenAssistant/reward-model-deberta-v3-large-v2"])


def test_unknown_builtin_model(tmp_path):
    path = write(tmp_path, MINIMAL + "model: {policy: 'builtin:tiny-lama'}\n")
    with pytest.raises(SuiteError, match=r"model.policy: unknown builtin model 'builtin:tiny-lama'; "
                                         r"did you mean 'builtin:tiny-llama'"):
        validate_suite(path)


def test_cli_exit_codes():
    from bench.cli import main

    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(SUITES / "ci_smoke.yaml"), "--set", "seeds=[4]"])
    assert ok.exit_code == 0, ok.output
    assert "OK, 9 runs" in ok.output
    bad = runner.invoke(main, ["validate", str(BAD / "negative_beta.yaml")])
    assert bad.exit_code == 2
    assert bad.output.strip().count("\n") == 0 and "objectives[0].params.beta" in bad.output


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP")])
def test_shipped_accelerate_configs_validate(tmp_path, name, kind):
    config = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / f"{name}.yaml"
    path = write(tmp_path, MINIMAL + f"launcher: accelerate\naccelerate: {{num_processes: 2, config_file: {config}}}\n")
    assert f"launcher: accelerate, 2 processes, {kind} from {config}" in str(validate_suite(path))


def test_run_rejects_a_deepspeed_config_before_any_stage(tmp_path):
    from bench.cli import main

    out = tmp_path / "results"
    result = CliRunner().invoke(main, ["run", str(BAD / "accelerate_config_deepspeed.yaml"), "--out", str(out)])
    assert result.exit_code != 0
    assert result.output.strip().count("\n") == 0, result.output
    assert "accelerate.config_file" in result.output and "DEEPSPEED" in result.output
    assert not any(out.rglob("*.json")), "a stage ran before the config was checked"

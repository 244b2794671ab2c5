"""`validate`: schema plus data, models and lm-eval tasks, without training; one-line failures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.errors import BenchError, NetworkRequiredError, SuiteError, SuiteErrors
from bench.suite.validate import validate_suite

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
    assert text.splitlines()[1] == "  Reduced smoke suite for the test run (all stages, all objectives, 5 steps, 1 seed)."
    assert "lm-eval: tasks arith_qa known" in text
    for run in summary.runs:
        assert run.run_id in text and run.label in text


def test_overrides_reach_the_summary():
    summary = validate_suite(SUITES / "ci_smoke.yaml", ["seeds=[0,1]", "scoring.lm_eval.tasks=[]"])
    assert summary.num_runs == 18
    assert "lm-eval: no tasks" in str(summary)


def test_hh_rlhf_needs_the_network_offline():
    """Offline, every resource the suite needs from the network is named, one line each."""
    with pytest.raises(BenchError) as info:
        validate_suite(SUITES / "hh_rlhf.yaml")
    lines = getattr(info.value, "lines", [str(info.value)])
    assert all("\n" not in ln and "hh_rlhf.yaml" in ln for ln in lines)
    assert "data.path" in lines[0] and "network" in lines[0]
    assert any("network" in ln and "scoring.lm_eval.tasks" in ln for ln in lines)


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
    path = write(tmp_path, MINIMAL + "data: {source: preference, path: ./pairs.jsonl, eval_prompts: 1, drift_pairs: 1}\n"
                                     "training: {batch_size: 2}\nreward_model: {kind: none}\n")
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
    # a character-level model: its budget must hold the longest arith answer in characters
    path = write(tmp_path, MINIMAL + f"model: {{policy: {tiny_model_dir}}}\n"
                           f"reward_model: {{kind: load, path: {tiny_reward_model_dir}}}\n"
                           "generation: {max_new_tokens: 128}\n")
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


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, "name: t\nseeds: [0, yes]\ntraining: {learning_rate: .inf}\n"
                           "data: {source: arith, limit: 40, eval_prompts: 8, drift_pairs: 8}\nobjectives:\n  - name: dpo\n")
    with pytest.raises(SuiteErrors) as info:
        validate_suite(path)
    assert [ln.split(": ")[1] for ln in info.value.lines] == ["seeds[1]", "training.learning_rate"]
    path = write(tmp_path, "name: t\nseeds: [0]\ntraining: {batch_size: 500}\nreward_model: {kind: none}\n"
                           "data: {source: arith, limit: 40, eval_prompts: 8, drift_pairs: 8}\n"
                           "scoring: {reward_model: false, lm_eval: {tasks: [arith_qaa]}}\nobjectives:\n  - name: dpo\n")
    with pytest.raises(SuiteErrors) as info:
        validate_suite(path)
    fields = [ln.split(": ")[1] for ln in info.value.lines]
    assert fields == ["training.batch_size", "scoring.lm_eval.tasks[0]"]
    result = CliRunner().invoke(__import__("bench.cli", fromlist=["main"]).main, ["validate", str(path)])
    assert result.exit_code == 2 and result.output.count("error: ") == 2


def test_model_directory_with_unreadable_weights_fails_validate(tmp_path, tiny_model_dir):
    import shutil

    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    path = write(tmp_path, MINIMAL + f"model: {{policy: {broken}}}\n")
    with pytest.raises(SuiteError, match=rf"model.policy: weights file {weights} is unreadable"):
        validate_suite(path, ["scoring.lm_eval.tasks=[]"])
    weights.unlink()
    with pytest.raises(SuiteError, match="has no weights"):
        validate_suite(path, ["scoring.lm_eval.tasks=[]"])


def test_vllm_backend_without_vllm_fails_validate(tmp_path):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    path = write(tmp_path, MINIMAL + "generation: {backend: vllm}\n")
    with pytest.raises(SuiteError, match="generation.backend: vllm is not installed"):
        validate_suite(path)


def test_lm_eval_task_whose_data_needs_the_network(tmp_path, monkeypatch):
    import trainers.net

    monkeypatch.setattr(trainers.net, "network_available", lambda: False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "no-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-cache"))
    path = write(tmp_path, MINIMAL + "scoring: {lm_eval: {tasks: [hellaswag]}}\n")
    with pytest.raises(NetworkRequiredError, match=r"tasks\[0\]: task 'hellaswag' reads dataset Rowan/hellaswag"):
        validate_suite(path)


def test_run_rejects_an_unknown_task_before_any_stage(tmp_path):
    from bench.run.runner import run_suite

    with pytest.raises(SuiteError, match="unknown lm-eval task 'arith_qaa'"):
        run_suite(SUITES / "ci_smoke.yaml", overrides=["scoring.lm_eval.tasks=[arith_qaa]"], out_dir=tmp_path / "o",
                  progress=False)
    assert not (tmp_path / "o" / "stages").exists()


def test_run_rejects_a_batch_larger_than_the_data_before_sft(tmp_path):
    from bench.run.runner import run_suite

    with pytest.raises(SuiteError, match="training.batch_size: 4096 pairs a step is more than the 104 training pairs"):
        run_suite(SUITES / "ci_smoke.yaml", overrides=["training.batch_size=4096"], out_dir=tmp_path / "o",
                  progress=False)
    assert sorted(p.name for p in (tmp_path / "o" / "stages").iterdir()) == ["data"]

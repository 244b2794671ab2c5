"""The training loop's invariants on the tiny model (fp32, CPU, a few steps each)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from bench.errors import BenchError
from tests.helpers_trainer import load_params, small_config, tokenized_pairs, watch_trained_models
from trainers.trainer import train

import trainers.objectives as objectives
DPO = [{"name": "dpo", "weight": 1.0, "beta": 0.1}]


@pytest.fixture(scope="module")
def data(char_tokenizer):
    return tokenized_pairs(char_tokenizer, n=16, seed=1)


def _run(tmp_path, name, model_dir, data, spec=DPO, **cfg):
    return train(model_path=model_dir, objective=objectives.build_objective(spec), train_data=data,
                 config=small_config(**cfg), out_dir=tmp_path / name, progress=False)


def _log(result):
    return [json.loads(ln) for ln in result.log_path.read_text().splitlines()]


def test_dpo_step_zero_loss_is_ln2_and_accuracy_zero(tmp_path, tiny_model_dir, data):
    # One step holds every pair, so step 0's micro-batch is the reference pass's batch
    # (same rows, same padding): policy and reference log-probs agree bit for bit.
    res = _run(tmp_path, "dpo", tiny_model_dir, data, max_steps=2, batch_size=len(data))
    assert res.status == "ok" and res.steps == 2
    first = _log(res)[0]
    assert first["step"] == 1
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)   # policy = reference: Δ = 0
    assert first["margin"] == pytest.approx(0.0, abs=1e-6)
    assert first["accuracy"] == 0.0                                  # r_w > r_l is strict
    for key in ("grad_norm", "lr", "logps/chosen", "logratio/rejected", "len/chosen"):
        assert key in first
    assert (tmp_path / "dpo" / "checkpoint" / "config.json").exists()
    assert (tmp_path / "dpo" / "checkpoint" / "tokenizer_config.json").exists()


def test_step_one_and_last_step_are_logged_whatever_log_every(tmp_path, tiny_model_dir, data):
    # The regression gate's step-1 invariant (bench.gate.check) reads step 1 from every train log.
    res = _run(tmp_path, "sparse", tiny_model_dir, data, max_steps=7, log_every=3)
    assert [row["step"] for row in _log(res)] == [1, 3, 6, 7]


def test_each_logged_step_names_its_batch_and_the_seed_changes_it(tmp_path, tiny_model_dir, data):
    # The gate's seed-independence invariant (bench/gate/integrity.py) compares these digests.
    a = [row["data/batch"] for row in _log(_run(tmp_path, "s0", tiny_model_dir, data, max_steps=2, seed=0))]
    b = [row["data/batch"] for row in _log(_run(tmp_path, "s1", tiny_model_dir, data, max_steps=2, seed=1))]
    hinge = [{"name": "hinge", "weight": 1.0, "beta": 0.1}]
    c = [row["data/batch"] for row in _log(_run(tmp_path, "h0", tiny_model_dir, data, hinge, max_steps=2, seed=0))]
    assert len(a) == 2 and len(set(a)) == 2 and all(len(d) == 12 for d in a)
    assert a != b and a == c            # the seed moves the order, the objective does not


def test_grad_accumulation_1x8_equals_8x1(tmp_path, tiny_model_dir, data):
    a = _run(tmp_path, "a", tiny_model_dir, data, batch_size=8, grad_accum=1, max_steps=2)
    b = _run(tmp_path, "b", tiny_model_dir, data, batch_size=1, grad_accum=8, max_steps=2)
    for ra, rb in zip(_log(a), _log(b)):
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-5)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], abs=1e-5)
    pa, pb = load_params(a.checkpoint), load_params(b.checkpoint)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], atol=1e-5, rtol=0)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8.0}], ids=["full", "lora"])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, tiny_model_dir, data, lora):
    # LoRA: the state holds the adapter (the trainable part) and its optimiser state only.
    full = _run(tmp_path, "full", tiny_model_dir, data, max_steps=6, batch_size=2, lora=lora, learning_rate=1e-2)

    def kill_at_4(step):     # state saved at 3; step 4 is lost and must be redone
        if step == 4:
            raise _Interrupt

    cfg = small_config(max_steps=6, batch_size=2, save_every=3, lora=lora, learning_rate=1e-2)
    with pytest.raises(_Interrupt):
        train(model_path=tiny_model_dir, objective=objectives.build_objective(DPO), train_data=data, config=cfg,
              out_dir=tmp_path / "resumed", progress=False, on_step=kill_at_4)
    assert (tmp_path / "resumed" / "state" / "trainer_state.json").exists()
    assert not (tmp_path / "resumed" / "checkpoint").exists()
    saved = torch.load(tmp_path / "resumed" / "state" / "model.pt")
    assert all(("lora_" in k) == (lora is not None) for k in saved), sorted(saved)[:3]
    calls = []
    res = train(model_path=tiny_model_dir, objective=objectives.build_objective(DPO), train_data=data, config=cfg,
                out_dir=tmp_path / "resumed", progress=False, on_step=calls.append)
    assert calls == [4, 5, 6]
    pf, pr = load_params(full.checkpoint), load_params(res.checkpoint)
    for k in pf:
        torch.testing.assert_close(pf[k], pr[k], atol=1e-6, rtol=0)
    assert [r["step"] for r in _log(res)] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in _log(res)] == pytest.approx([r["loss"] for r in _log(full)], abs=1e-6)
    # a complete checkpoint: a third call returns at once
    again = train(model_path=tiny_model_dir, objective=objectives.build_objective(DPO), train_data=data,
                  config=cfg, out_dir=tmp_path / "resumed", progress=False, on_step=calls.append)
    assert again.status == "ok" and again.steps == 6 and calls == [4, 5, 6]


def test_damaged_state_restarts_the_run_with_one_line(tmp_path, tiny_model_dir, data, capsys):
    """A damaged resume state is set aside and the run starts again (it used to stop every rerun)."""
    state = tmp_path / "run" / "state"
    state.mkdir(parents=True)
    (state / "trainer_state.json").write_text("{not json")
    result = _run(tmp_path, "run", tiny_model_dir, data)
    assert result.status == "ok" and result.started_at == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "damaged" in ln]
    assert len(err) == 1 and str(state) in err[0] and "starts again from step 0" in err[0]


def _stop_at_2(step):
    if step == 2:
        raise _Interrupt


def test_state_with_a_truncated_file_is_caught_by_its_manifest(tmp_path, tiny_model_dir, data, capsys):
    with pytest.raises(_Interrupt):
        train(model_path=tiny_model_dir, objective=objectives.build_objective(DPO), train_data=data,
              config=small_config(max_steps=4, save_every=1), out_dir=tmp_path / "run", progress=False,
              on_step=_stop_at_2)
    weights_file = tmp_path / "run" / "state" / "optimizer.pt"
    weights_file.write_bytes(weights_file.read_bytes()[:100])
    result = _run(tmp_path, "run", tiny_model_dir, data, max_steps=4, save_every=1)
    assert result.status == "ok" and result.started_at == 0
    assert "optimizer.pt: 100 bytes" in capsys.readouterr().err


def test_state_missing_a_parameter_is_one_line_bench_error(tmp_path, tiny_model_dir, data):
    """A state whose files are intact but do not fit the model (not damage: a mismatch) stops."""
    from trainers.manifest import build_manifest

    with pytest.raises(_Interrupt):
        train(model_path=tiny_model_dir, objective=objectives.build_objective(DPO), train_data=data,
              config=small_config(max_steps=4, save_every=1), out_dir=tmp_path / "run", progress=False,
              on_step=_stop_at_2)
    state = tmp_path / "run" / "state"
    weights_file = state / "model.pt"
    weights = torch.load(weights_file)
    dropped = sorted(weights)[0]
    torch.save({k: v for k, v in weights.items() if k != dropped}, weights_file)
    saved = json.loads((state / "trainer_state.json").read_text())
    saved["files"] = build_manifest(state, exclude=("trainer_state.json",))
    (state / "trainer_state.json").write_text(json.dumps(saved))
    with pytest.raises(BenchError) as err:
        _run(tmp_path, "run", tiny_model_dir, data, max_steps=4, save_every=1)
    assert f"no saved value for parameter {dropped}" in str(err.value) and "\n" not in str(err.value)


def test_damaged_checkpoint_is_trained_again_with_one_line(tmp_path, tiny_model_dir, data, capsys):
    first = _run(tmp_path, "run", tiny_model_dir, data)
    weights = next(first.checkpoint.glob("*.safetensors"))
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    again = _run(tmp_path, "run", tiny_model_dir, data)
    assert again.status == "ok" and again.started_at == 0
    assert "is incomplete or damaged" in capsys.readouterr().err
    assert weights.read_bytes() == good           # the same training gives the same weights
    (tmp_path / "empty" / "checkpoint").mkdir(parents=True)
    assert _run(tmp_path, "empty", tiny_model_dir, data).status == "ok"
    assert _run(tmp_path, "run", tiny_model_dir, data).started_at is None   # intact now: reused


class _NaNAfter:
    """Wraps an objective; its losses become NaN from the given call on."""

    def __init__(self, inner, after):
        self.inner, self.after, self.calls = inner, after, 0
        self.needs_reference = inner.needs_reference

    def __call__(self, pair):
        out = self.inner(pair)
        self.calls += 1
        if self.calls > self.after:
            out.losses = out.losses * float("nan")
        return out


def test_nan_loss_fails_without_checkpoint(tmp_path, tiny_model_dir, data):
    obj = _NaNAfter(objectives.build_objective(DPO), after=1)
    res = train(model_path=tiny_model_dir, objective=obj, train_data=data, config=small_config(max_steps=4),
                out_dir=tmp_path / "nan", progress=False)
    assert res.status == "failed" and res.checkpoint is None and res.steps == 2
    assert "non-finite loss at step 2" in res.reason
    assert json.loads((tmp_path / "nan" / "failed.json").read_text())["reason"] == res.reason
    assert not (tmp_path / "nan" / "checkpoint").exists()


def test_data_order_depends_on_seed_only(tmp_path):
    from trainers.data_order import DataOrder

    a, b = DataOrder(10, 4, seed=3), DataOrder(10, 4, seed=3)
    seen = [a.step_indices(s) for s in range(5)]
    assert seen == [b.step_indices(s) for s in range(5)]
    flat = sum(seen, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))   # epochs
    assert DataOrder(10, 4, seed=4).step_indices(0) != seen[0]


def test_reference_free_objective_never_computes_reference(tmp_path, tiny_model_dir, data, monkeypatch):
    import trainers.trainer as tr

    monkeypatch.setattr(tr, "compute_reference", lambda *a, **k: pytest.fail("reference computed"))
    res = _run(tmp_path, "nll", tiny_model_dir, data, spec=[{"name": "nll", "weight": 1.0}], max_steps=2)
    assert res.status == "ok"
    assert not (tmp_path / "nll" / "reference").exists()


def test_gradient_checkpointing_changes_nothing_but_memory(tmp_path, tiny_model_dir, data):
    plain = _run(tmp_path, "plain", tiny_model_dir, data, max_steps=2)
    ckpt = _run(tmp_path, "gc", tiny_model_dir, data, max_steps=2, gradient_checkpointing=True)
    pa, pb = load_params(plain.checkpoint), load_params(ckpt.checkpoint)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], atol=1e-6, rtol=0)


def test_state_is_saved_on_a_clock_without_save_every(tmp_path, tiny_model_dir, data, monkeypatch):
    """kill -9 loses at most about a minute: here the clock is 0 s, so every step is saved."""
    import trainers.interrupt

    monkeypatch.setattr(trainers.interrupt, "SAVE_SECONDS", 0.0)
    # Without the stretch to 10x the last save's cost: on a fast machine a save costs more than
    # a tiny step, so the stretched clock would (rightly) skip step 2 and the test would depend on timing.
    monkeypatch.setattr(trainers.interrupt.SaveClock, "saved",
                        lambda self, started: setattr(self, "last", trainers.interrupt.time.monotonic()))
    with pytest.raises(_Interrupt):
        train(model_path=tiny_model_dir, objective=objectives.build_objective(DPO), train_data=data,
              config=small_config(max_steps=6), out_dir=tmp_path / "run", progress=False, on_step=_stop_at_2)
    assert json.loads((tmp_path / "run" / "state" / "trainer_state.json").read_text())["step"] == 2
    resumed = _run(tmp_path, "run", tiny_model_dir, data, max_steps=6)
    assert resumed.status == "ok" and resumed.started_at == 2


def test_sigint_saves_state_and_says_how_to_resume(tmp_path, tiny_model_dir, data, capsys):
    import os
    import signal

    from trainers.interrupt import TrainingInterrupted

    def ctrl_c(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)   # as the terminal sends it; handled after this step

    with pytest.raises(TrainingInterrupted) as info:
        train(model_path=tiny_model_dir, objective=objectives.build_objective(DPO), train_data=data,
              config=small_config(max_steps=6), out_dir=tmp_path / "run", progress=False, on_step=ctrl_c)
    text = str(info.value)
    assert "interrupted (SIGINT) at step 4 of 6" in text or "interrupted (SIGINT) at step 3 of 6" in text
    assert "run the same command again to resume" in text and "\n" not in text
    step = json.loads((tmp_path / "run" / "state" / "trainer_state.json").read_text())["step"]
    assert f"at step {step} of 6" in text
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler      # handlers restored
    resumed = _run(tmp_path, "run", tiny_model_dir, data, max_steps=6)
    assert resumed.status == "ok" and resumed.started_at == step
    assert f"resuming training from step {step} of 6" in capsys.readouterr().err
    full = _run(tmp_path, "full", tiny_model_dir, data, max_steps=6)
    for k, v in load_params(full.checkpoint).items():
        torch.testing.assert_close(v, load_params(resumed.checkpoint)[k], atol=0, rtol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the trainer always collects and empties the cache")
def test_trained_model_is_freed_with_no_full_collection_on_the_cpu(tmp_path, tiny_model_dir, data, monkeypatch):
    # A full gc.collect scans every object of the process (~0.2 s in a process that imported
    # transformers): the trainer skips it when reference counting already freed the model.
    import gc

    loaded, collections = watch_trained_models(monkeypatch, cycle=False)
    gc.disable()            # no automatic collection may free the model in our place
    try:
        assert _run(tmp_path, "plain", tiny_model_dir, data, max_steps=1).status == "ok"
        assert loaded and all(ref() is None for ref in loaded)   # freed on return, by reference counting
    finally:
        gc.enable()
    assert collections == []


def test_a_model_in_a_reference_cycle_is_collected_before_train_returns(tmp_path, tiny_model_dir, data, monkeypatch):
    import gc

    loaded, collections = watch_trained_models(monkeypatch, cycle=True)
    gc.disable()
    try:
        assert _run(tmp_path, "cycle", tiny_model_dir, data, max_steps=1).status == "ok"
        assert loaded and all(ref() is None for ref in loaded)   # the trainer's own collection freed it
    finally:
        gc.enable()
    assert collections == [1]

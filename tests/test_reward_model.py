"""Reward-model scoring (direct logit, batching invariance) and Bradley–Terry training."""
from __future__ import annotations

import json
import math

import pytest
import torch

from bench.errors import ModelNotFoundError
from trainers.heads import BradleyTerry
from bench.suite.schema import TrainConfig
from bench.evaluation.scoring.reward_model import (
    REWARD_TRAIN_FILE,
    RewardModelScorer,
    render_texts,
    train_reward_model,
)

PROMPTS = ["Compute 2+3.\n", "Compute 12*3-4.\n", "Hi", "Compute 7.\n", "x", "Compute 1+1+1+1.\n", "Why?", "ab"]
RESPONSES = [" Answer: 5", " 12*3=36. 36-4=32. Answer: 32", " hello there, friend", " Answer: 7", "",
             " 1+1=2. 2+1=3. 3+1=4. Answer: 4", " Because.", " c"]


def test_score_equals_the_models_own_logit(tiny_reward_model_dir, char_tokenizer):
    scorer = RewardModelScorer(tiny_reward_model_dir, batch_size=4, progress=False)
    ids = torch.tensor([char_tokenizer(PROMPTS[1] + RESPONSES[1], add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        direct = float(scorer.model(input_ids=ids).logits[0, 0])
    assert scorer.score([PROMPTS[1]], [RESPONSES[1]]) == pytest.approx([direct], abs=1e-6)


def test_batching_and_sorting_do_not_change_scores(tiny_reward_model_dir):
    one = RewardModelScorer(tiny_reward_model_dir, batch_size=1, progress=False).score(PROMPTS, RESPONSES)
    seven = RewardModelScorer(tiny_reward_model_dir, batch_size=7, progress=False).score(PROMPTS, RESPONSES)
    assert seven == pytest.approx(one, abs=1e-5)
    assert len(set(round(s, 6) for s in one)) > 1  # distinct texts, distinct scores: order matters
    # reversing the inputs reverses the scores (order restored after the length sort)
    rev = RewardModelScorer(tiny_reward_model_dir, batch_size=3, progress=False).score(PROMPTS[::-1], RESPONSES[::-1])
    assert rev == pytest.approx(one[::-1], abs=1e-5)


def test_chat_template_renders_user_then_assistant(char_tokenizer):
    import copy

    t = copy.deepcopy(char_tokenizer)  # keep the session fixture untouched
    t.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    texts, templated = render_texts(t, ["Compute 2+3.\n"], [" Answer: 5"])
    assert templated and texts == ["<user>Compute 2+3.\n<assistant>Answer: 5"]
    msgs = [({"role": "system", "content": "S"}, {"role": "user", "content": "Q"})]
    assert render_texts(t, ["ignored"], ["A"], msgs)[0] == ["<system>S<user>Q<assistant>A"]
    assert render_texts(char_tokenizer, ["p"], ["r"]) == (["pr"], False)


def test_bradley_terry_loss_hand_values():
    """Per pair -log σ(r_w - r_l): r_w - r_l = 2 gives log(1 + e^-2) = 0.126928, -1 gives
    log(1 + e) = 1.313262, 0 gives log 2 = 0.693147 (worked by hand)."""
    got = BradleyTerry()(torch.tensor([3.0, 0.0, 0.5]), torch.tensor([1.0, 1.0, 0.5]))
    assert got.tolist() == pytest.approx([0.126928, 1.313262, 0.693147], abs=1e-6)
    assert got.shape == (3,)      # per pair: the loop sums and normalises by the global batch


def test_missing_path_is_one_line():
    with pytest.raises(ModelNotFoundError, match="/no/such/reward_model") as err:
        RewardModelScorer("/no/such/reward_model")
    assert "\n" not in str(err.value)


def _pairs(n=32):
    from bench.data.arith import make_pairs

    # Learnable signal: every chosen response carries filler (longer), no rejected one does.
    return make_pairs(n, seed=3, length_confound=1.0, rejected_filler=0.0)


def _accuracy(model_dir, pairs) -> float:
    scorer = RewardModelScorer(model_dir, progress=False)
    c = scorer.score([p.prompt for p in pairs], [p.chosen for p in pairs])
    r = scorer.score([p.prompt for p in pairs], [p.rejected for p in pairs])
    return sum(a > b for a, b in zip(c, r)) / len(pairs)


def test_training_learns_the_pair_signal(tmp_path, char_tokenizer):
    from bench.models import build_tiny_reward_model

    pairs = _pairs()
    # the untrained start (same seed) is at chance on these pairs
    assert _accuracy(build_tiny_reward_model(tmp_path / "base", char_tokenizer, seed=0), pairs) <= 0.6
    cfg = TrainConfig(learning_rate=3e-3, max_steps=8, batch_size=8, warmup_ratio=0.0, scheduler="constant", seed=0)
    out = train_reward_model(pairs, None, tmp_path / "rm", config=cfg, progress=False)
    report = json.loads((out / REWARD_TRAIN_FILE).read_text())
    assert report["steps"] == 8 and report["n_train"] == 29 and report["n_heldout"] == 3
    assert report["train_accuracy"] > 0.7 and report["final_loss"] < math.log(2)
    assert not list(tmp_path.glob(".rm.tmp-*"))  # the temporary dir was renamed away
    # the saved dir is an ordinary HF model dir whose scores reproduce the learned preference
    assert _accuracy(out, pairs) > 0.7


def test_training_is_deterministic(tmp_path):
    pairs = _pairs(8)
    cfg = TrainConfig(learning_rate=3e-3, max_steps=2, batch_size=4, seed=5)
    a = train_reward_model(pairs, None, tmp_path / "a", config=cfg, progress=False)
    b = train_reward_model(pairs, None, tmp_path / "b", config=cfg, progress=False)
    sa = RewardModelScorer(a, progress=False).score([pairs[0].prompt], [pairs[0].chosen])
    sb = RewardModelScorer(b, progress=False).score([pairs[0].prompt], [pairs[0].chosen])
    assert sa == pytest.approx(sb, abs=1e-6)
    assert json.loads((a / REWARD_TRAIN_FILE).read_text()) == json.loads((b / REWARD_TRAIN_FILE).read_text())


def test_training_from_a_causal_lm_checkpoint(tiny_model_dir, tmp_path):
    # an SFT checkpoint (causal LM) gets a fresh 1-label head and its own tokenizer is kept
    cfg = TrainConfig(learning_rate=1e-3, max_steps=1, batch_size=4, seed=0)
    out = train_reward_model(_pairs(4), tiny_model_dir, tmp_path / "rm", config=cfg, progress=False)
    scorer = RewardModelScorer(out, progress=False)
    assert scorer.model.config.num_labels == 1
    assert json.loads((out / REWARD_TRAIN_FILE).read_text())["base_model"] == str(tiny_model_dir)


def test_a_left_padding_tokenizer_scores_the_same(tiny_reward_model_dir):
    # The scorer pads on the right itself, so the score position and the position ids of real
    # tokens never depend on the checkpoint's saved padding side.
    right = RewardModelScorer(tiny_reward_model_dir, batch_size=8, progress=False)
    left = RewardModelScorer(tiny_reward_model_dir, batch_size=8, progress=False)
    left.tokenizer.padding_side = "left"
    assert left.score(PROMPTS, RESPONSES) == pytest.approx(right.score(PROMPTS, RESPONSES), abs=1e-5)


# ---------------------------------------------------------------- one training loop
def _rm_data(tokenizer, n=12):
    from bench.evaluation.scoring.reward_model import _encode_pairs
    from trainers.tokenize import TokenizedPair

    encoded = _encode_pairs(tokenizer, _pairs(n), 64)
    return [TokenizedPair(id=str(i), prompt_ids=[], chosen_ids=c, rejected_ids=r) for i, (c, r) in enumerate(encoded)]


class _Stop(Exception):
    pass


def test_reward_model_training_resumed_equals_uninterrupted(tmp_path, tiny_reward_model_dir, char_tokenizer):
    from safetensors.torch import load_file

    from trainers.trainer import train

    data = _rm_data(char_tokenizer)
    cfg = TrainConfig(learning_rate=1e-2, max_steps=6, batch_size=2, save_every=3, seed=1, scheduler="cosine")
    full = train(model_path=tiny_reward_model_dir, objective=BradleyTerry(), train_data=data, config=cfg,
                 out_dir=tmp_path / "full", progress=False)

    def kill_at_4(step):     # state saved at 3; step 4 is lost and must be redone
        if step == 4:
            raise _Stop

    with pytest.raises(_Stop):
        train(model_path=tiny_reward_model_dir, objective=BradleyTerry(), train_data=data, config=cfg,
              out_dir=tmp_path / "resumed", progress=False, on_step=kill_at_4)
    steps = []
    resumed = train(model_path=tiny_reward_model_dir, objective=BradleyTerry(), train_data=data, config=cfg,
                    out_dir=tmp_path / "resumed", progress=False, on_step=steps.append)
    assert resumed.started_at == 3 and steps == [4, 5, 6]
    a = load_file(str(full.checkpoint / "model.safetensors"))
    b = load_file(str(resumed.checkpoint / "model.safetensors"))
    assert a.keys() == b.keys() and "score.weight" in a
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
    moved = load_file(str(tiny_reward_model_dir / "model.safetensors"))["score.weight"]
    assert not torch.equal(moved, a["score.weight"])     # it trained


def test_reward_model_uses_the_trainers_schedule(tmp_path, tiny_reward_model_dir, tiny_model_dir, char_tokenizer):
    """`constant` warms up (transformers' constant_with_warmup) for the reward model as for a
    policy: the same learning rate at every step of the same config."""
    from tests.helpers_trainer import tokenized_pairs
    from trainers.objectives import build_objective
    from trainers.optim import SCHEDULERS
    from trainers.trainer import read_log_lines, train

    cfg = TrainConfig(learning_rate=1e-3, max_steps=4, batch_size=2, warmup_ratio=0.5, scheduler="constant", seed=0)
    rm = train(model_path=tiny_reward_model_dir, objective=BradleyTerry(), train_data=_rm_data(char_tokenizer),
               config=cfg, out_dir=tmp_path / "rm", progress=False)
    policy = train(model_path=tiny_model_dir, objective=build_objective([{"name": "nll", "weight": 1.0}]),
                   train_data=tokenized_pairs(char_tokenizer, n=8), config=cfg, out_dir=tmp_path / "p", progress=False)
    lrs = [row["lr"] for _, row in read_log_lines(rm.log_path)]
    assert lrs == [row["lr"] for _, row in read_log_lines(policy.log_path)]
    assert lrs == pytest.approx([0.0, 5e-4, 1e-3, 1e-3])      # 2 warm-up steps, then constant
    assert SCHEDULERS["constant"] == "constant_with_warmup"


def test_reward_model_order_cuts_each_epoch_into_chunks_and_a_short_last_one():
    from trainers.data_order import RewardModelOrder

    order = RewardModelOrder(7, batch_size=3, grad_accum=2, seed=0)
    steps = [order.micro_batches(s, lengths=None, batch_size=3) for s in range(3)]
    chunks = [c for step in steps for c in step]
    assert [len(c) for c in chunks] == [3, 3, 1, 3, 3, 1]           # two epochs of 7
    assert sorted(sum(chunks[:3], [])) == list(range(7)) == sorted(sum(chunks[3:], []))
    assert chunks[:3] != chunks[3:]                                  # reshuffled per epoch
    again = RewardModelOrder(7, batch_size=3, grad_accum=2, seed=0)  # a resumed run: step 2 alone
    assert again.micro_batches(2, lengths=None, batch_size=3) == steps[2]
    assert order.total_steps(1.0) == 2                               # ceil(3 chunks / 2)

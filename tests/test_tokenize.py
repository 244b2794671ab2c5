"""Tokenisation: exact prompt/response boundary, EOS, truncation rule, skips counted."""
from __future__ import annotations

from bench.data.records import PreferencePair
from trainers.tokenize import render_prompt, tokenize_pairs


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_prompt_and_responses_tokenised_separately_with_eos(char_tokenizer):
    pair = PreferencePair(id="a", prompt="2+2=", chosen="4", rejected="5")
    (t,), skipped = tokenize_pairs([pair], char_tokenizer, max_length=32, max_prompt_length=16)
    assert skipped == {}
    eos = char_tokenizer.eos_token_id
    assert t.prompt_ids == _ids(char_tokenizer, "2+2=")
    assert t.chosen_ids == _ids(char_tokenizer, "4") + [eos]
    assert t.rejected_ids == _ids(char_tokenizer, "5") + [eos]


def test_prompt_left_truncated_and_responses_cut_to_max_length(char_tokenizer):
    pair = PreferencePair(id="a", prompt="abcdefgh", chosen="123456", rejected="xy")
    (t,), _ = tokenize_pairs([pair], char_tokenizer, max_length=8, max_prompt_length=5)
    assert t.prompt_ids == _ids(char_tokenizer, "defgh")          # the last 5 tokens
    assert t.chosen_ids == _ids(char_tokenizer, "123")             # 5 + 3 = 8, EOS cut off
    assert t.rejected_ids == _ids(char_tokenizer, "xy") + [char_tokenizer.eos_token_id]


def test_truncated_away_and_empty_pairs_are_counted_and_skipped(char_tokenizer):
    pairs = [
        PreferencePair(id="ok", prompt="1+1=", chosen="2", rejected="3"),
        PreferencePair(id="long", prompt="123456789", chosen="1", rejected="2"),
        PreferencePair(id="empty", prompt="1+1=", chosen="2", rejected=""),
    ]
    out, skipped = tokenize_pairs(pairs, char_tokenizer, max_length=6, max_prompt_length=6)
    assert [t.id for t in out] == ["ok"]
    assert skipped == {"response_truncated_away": 1, "empty_response": 1}


def test_sft_demonstration_has_no_rejected(char_tokenizer):
    demo = PreferencePair(id="d", prompt="1+1=", chosen="2", rejected="", metadata={"sft": True})
    (t,), skipped = tokenize_pairs([demo], char_tokenizer, max_length=16, max_prompt_length=8)
    assert t.rejected_ids is None and skipped == {}


def test_chat_template_used_only_with_messages(char_tokenizer):
    import copy

    chat_tok = copy.deepcopy(char_tokenizer)
    chat_tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    with_msgs = PreferencePair(id="m", prompt="plain", chosen="a", rejected="b",
                               messages=({"role": "user", "content": "hi"},))
    without = PreferencePair(id="p", prompt="plain", chosen="a", rejected="b")
    assert render_prompt(with_msgs, chat_tok) == "<user>hi<assistant>"
    assert render_prompt(without, chat_tok) == "plain"
    assert render_prompt(with_msgs, char_tokenizer) == "plain"

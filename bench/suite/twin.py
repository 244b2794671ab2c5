"""Local stand-ins for the hub parts of `suites/hh_rlhf.yaml`, built in code (offline, seconds).

`suites/hh_rlhf_tiny.yaml` is the real suite's CPU twin: the same stages and code paths,
with every hub part replaced by a small local one of the same kind:

- `tokenizer`: a byte-level BPE (the Qwen2/GPT-2 kind) trained with `tokenizers` on the HH
  sample, with a ChatML chat template (`<|im_start|>role ... <|im_end|>`, EOS `<|im_end|>`);
- `policy/`: a random-init Qwen2 causal LM with that tokenizer, and a `generation_config`
  that carries a `repetition_penalty` (as released checkpoints often do; the suite's own
  generation settings must win over it);
- `rm_encoder/`: a DeBERTa-v2 sequence classifier (the suite's OpenAssistant reward model is a
  DeBERTa-v3) with a `[CLS] prompt [SEP] response [SEP]` tokenizer;
- `rm_decoder/`: a Qwen2 sequence classifier with the chat tokenizer (the decoder kind);
- `tasks/`: two lm-eval tasks of the hub kind (`dataset_path` pointing at local json files, no
  custom loader): `hh_twin_mc` (multiple_choice: which reply was chosen) and `hh_twin_gen`
  (generate_until), made from the same HH sample.

    python -m bench.suite.twin                  # writes suites/hh_rlhf_tiny/ (the suite's paths)
    python -m bench.suite.twin --out DIR        # elsewhere (then --set the suite's paths to DIR)
    python -m bench.suite.twin --out DIR --hidden-size 128   # head size 32: vLLM's CPU attention runs it
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

import torch

from bench.data.hh_rlhf import parse_hh

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "suites" / "hh_rlhf_tiny"
HH_SAMPLE = REPO / "data" / "hh-rlhf" / "harmless-base-test-1800.jsonl.gz"   # kept in the repository (data/README.md)

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHAT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ENCODER_SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
TASKS = ("hh_twin_mc", "hh_twin_gen")


def hh_texts(path: Path = HH_SAMPLE) -> list[str]:
    """Both conversations of every row of the HH sample (the tokenizers' training text)."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [row[key] for row in rows for key in ("chosen", "rejected") if isinstance(row.get(key), str)]


def _bpe(texts, vocab_size: int, specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer=trainer)
    return core


def build_chat_tokenizer(texts, vocab_size: int = 512):
    """Byte-level BPE with a ChatML template; EOS `<|im_end|>`, pad `<|endoftext|>`, no BOS (as Qwen2)."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=_bpe(texts, vocab_size, CHAT_SPECIALS),
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHATML_TEMPLATE
    tok.model_max_length = 32768
    return tok


def build_encoder_tokenizer(texts, vocab_size: int = 512):
    """Byte-level BPE with `[CLS] a [SEP] b [SEP]` pair encoding (the BERT/DeBERTa layout)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    core = _bpe(texts, vocab_size, ENCODER_SPECIALS)
    cls, sep = core.token_to_id("[CLS]"), core.token_to_id("[SEP]")
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                  unk_token="[UNK]", mask_token="[MASK]")
    tok.model_max_length = 512
    return tok


def qwen2_config(tokenizer, *, hidden_size=64, layers=2, heads=4, kv_heads=2, max_positions=1024, num_labels=None):
    from transformers import Qwen2Config

    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 3,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=max_positions, tie_word_embeddings=True,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    if num_labels is not None:
        cfg.num_labels = num_labels
    return cfg


def build_policy(out: Path, tokenizer, *, seed: int = 0, **size) -> Path:
    from transformers import GenerationConfig, Qwen2ForCausalLM

    from bench.models import save_with_tokenizer

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(qwen2_config(tokenizer, **size))
    # As in released checkpoints: defaults that the suite's explicit generation settings override.
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                               repetition_penalty=1.3, do_sample=True, top_k=20, temperature=0.7)
    return save_with_tokenizer(model, tokenizer, out)


def build_decoder_reward_model(out: Path, tokenizer, *, seed: int = 1, **size) -> Path:
    from transformers import Qwen2ForSequenceClassification

    from bench.models import save_with_tokenizer

    torch.manual_seed(seed)
    return save_with_tokenizer(Qwen2ForSequenceClassification(qwen2_config(tokenizer, num_labels=1, **size)),
                               tokenizer, out)


def build_encoder_reward_model(out: Path, tokenizer, *, seed: int = 2, hidden_size=64, layers=2, heads=4) -> Path:
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    from bench.models import save_with_tokenizer

    torch.manual_seed(seed)
    # DeBERTa-v3's layout: relative attention, no absolute positions, no token types.
    cfg = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
                          num_attention_heads=heads, intermediate_size=hidden_size * 2, max_position_embeddings=512,
                          relative_attention=True, position_buckets=64, pos_att_type=["p2c", "c2p"],
                          position_biased_input=False, type_vocab_size=0, pad_token_id=tokenizer.pad_token_id,
                          num_labels=1)
    return save_with_tokenizer(DebertaV2ForSequenceClassification(cfg), tokenizer, out)


# ---------------------------------------------------------------- lm-eval tasks (hub kind, local json)
MC_TASK = """\
# multiple_choice, hub kind: dataset_path is a local folder of json files (no custom loader).
task: hh_twin_mc
dataset_path: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
GEN_TASK = """\
# generate_until, hub kind: dataset_path is a local folder of json files (no custom loader).
task: hh_twin_gen
dataset_path: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 16
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
metadata:
  version: 1.0
"""


def build_tasks(out: Path, rows: list[tuple[str, str, str]], *, n: int = 32, seed: int = 0) -> Path:
    """Task YAMLs plus their json data: which of two replies was chosen (mc), and the chosen
    reply's first words (generate_until)."""
    rng = random.Random(seed)
    mc, gen = [], []
    for prompt, chosen, rejected in rows[:n]:
        gold = rng.randint(0, 1)
        choices = [chosen.strip(), rejected.strip()] if gold == 0 else [rejected.strip(), chosen.strip()]
        mc.append({"question": prompt, "choices": choices, "gold": gold})
        gen.append({"question": prompt, "answer": " ".join(chosen.split()[:3])})
    for name, docs, template in (("hh_twin_mc", mc, MC_TASK), ("hh_twin_gen", gen, GEN_TASK)):
        data = out / "data" / name
        data.mkdir(parents=True, exist_ok=True)
        (data / "test.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
        (out / f"{name}.yaml").write_text(template.format(data=data.resolve()))
    return out


def _parsed_rows(path: Path) -> list[tuple[str, str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    parsed = [parse_hh(r.get("chosen"), r.get("rejected")) for r in rows]
    return [(p.prompt, p.chosen, p.rejected) for p in parsed if not isinstance(p, str)]


def build_twin(out: Path = DEFAULT_OUT, *, data: Path = HH_SAMPLE, vocab_size: int = 512, hidden_size: int = 64,
               layers: int = 2) -> Path:
    """Every stand-in of `suites/hh_rlhf_tiny.yaml` under `out`; returns `out`."""
    out = Path(out)
    texts = hh_texts(data)
    chat = build_chat_tokenizer(texts, vocab_size)
    size = {"hidden_size": hidden_size, "layers": layers}
    build_policy(out / "policy", chat, **size)
    build_decoder_reward_model(out / "rm_decoder", chat, **size)
    build_encoder_reward_model(out / "rm_encoder", build_encoder_tokenizer(texts, vocab_size), **size)
    build_tasks(out / "tasks", _parsed_rows(data))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--data", type=Path, default=HH_SAMPLE)
    # 4 attention heads: the default 64 gives head size 16, which vLLM's CPU attention lacks
    parser.add_argument("--hidden-size", type=int, default=64)
    args = parser.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"error: the HH-RLHF sample {args.data} does not exist (--data names another copy)")
    if args.hidden_size < 4 or args.hidden_size % 4:
        raise SystemExit(f"error: --hidden-size {args.hidden_size} is not a positive multiple of the 4 attention heads")
    print(build_twin(args.out, data=args.data, hidden_size=args.hidden_size))


if __name__ == "__main__":
    main()

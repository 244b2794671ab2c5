"""Reward-model scoring and the Bradley–Terry training of the embedded default's judge.

A reward model is any `AutoModelForSequenceClassification` with one output: the score of
a (prompt, response) text read at its last non-padding token. Training minimises the
Bradley–Terry negative log-likelihood  -log σ(r(x, y_w) - r(x, y_l))  (Bradley & Terry,
1952; the reward-model objective of Ouyang et al., 2022, "InstructGPT", Eq. 1, and of
Rafailov et al., 2023, "DPO", Eq. 2).
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bench.errors import BenchError

REWARD_TRAIN_FILE = "reward_train.json"


# ---------------------------------------------------------------- formatting and batching
def render_texts(tokenizer, prompts: Sequence[str], responses: Sequence[str], messages=None) -> tuple[list[str], bool]:
    """(texts, templated): chat template (user prompt + assistant response) when the tokenizer
    has one, else plain ``prompt + response``. ``messages[i]`` is the chat form of prompt i."""
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    if not getattr(tokenizer, "chat_template", None):
        return [p + r for p, r in zip(prompts, responses)], False
    texts = []
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        chat = list(messages[i]) if messages is not None and messages[i] else [{"role": "user", "content": prompt}]
        chat = chat + [{"role": "assistant", "content": response.strip()}]
        texts.append(tokenizer.apply_chat_template(chat, tokenize=False))
    return texts, True


def encode(tokenizer, texts: Sequence[str], templated: bool, max_length: int | None) -> list[list[int]]:
    """Token ids per text; a text longer than ``max_length`` keeps its END (the scored part)."""
    if not texts:
        return []
    # A rendered chat template already contains its special tokens.
    ids = tokenizer(list(texts), add_special_tokens=not templated)["input_ids"]
    return [x[-max_length:] if max_length else x for x in ids]


def pad_right(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right padding: the position ids of real tokens then equal those of the unpadded input,
    and HF sequence-classification heads read the score at the last non-pad token."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return input_ids, mask


def forward_scores(model, ids: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Scores [N] of the id sequences in one padded forward (gradients flow when enabled)."""
    device = next(model.parameters()).device
    input_ids, mask = pad_right(ids, pad_id)
    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
    return logits[:, 0].float()


def _ensure_pad(model, tokenizer) -> int:
    # HF seq-cls models find the last real token via config.pad_token_id; unset, they fail
    # on batches or score the padding.
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.config.pad_token_id


def _max_length(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


# ---------------------------------------------------------------- scoring
class RewardModelScorer:
    """Score (prompt, response) texts with a sequence-classification reward model."""

    def __init__(self, path_or_id, *, batch_size: int = 32, device=None, trust_remote_code: bool = False,
                 progress: bool = True):
        from trainers.models import load_model, load_tokenizer

        self.path = str(path_or_id)
        self.tokenizer = load_tokenizer(self.path, trust_remote_code=trust_remote_code)
        self.model = load_model(self.path, trust_remote_code=trust_remote_code, head="sequence_classification",
                                role="reward_model", device=device).eval()
        if self.model.config.num_labels != 1:
            raise BenchError(f"reward model {self.path} has {self.model.config.num_labels} labels; a reward model has 1")
        self.pad_id = _ensure_pad(self.model, self.tokenizer)
        self.batch_size, self.progress = batch_size, progress

    def encode(self, prompts: Sequence[str], responses: Sequence[str], messages=None) -> list[list[int]]:
        """The model's input ids of each (prompt, response), in the layout of its kind."""
        if is_encoder(self.tokenizer):
            return encode_pairs_for_encoder(self.tokenizer, prompts, responses, _max_length(self.model))
        texts, templated = render_texts(self.tokenizer, prompts, responses, messages)
        return encode(self.tokenizer, texts, templated, _max_length(self.model))

    def score(self, prompts: Sequence[str], responses: Sequence[str], messages=None) -> list[float]:
        """One score per (prompt, response), in input order."""
        ids = self.encode(prompts, responses, messages)
        return score_ids(self.model, ids, self.pad_id, batch_size=self.batch_size, progress=self.progress)


def is_encoder(tokenizer) -> bool:
    """An encoder reward model (BERT/DeBERTa/RoBERTa kind): its tokenizer has CLS and SEP tokens.
    It pools from the first token ([CLS]) and was trained on (question, answer) pair encodings;
    decoder classifiers (Llama/Qwen2 kind) read the last token and take one text."""
    return tokenizer.cls_token is not None and tokenizer.sep_token is not None


def encode_pairs_for_encoder(tokenizer, prompts: Sequence[str], responses: Sequence[str],
                             max_length: int | None) -> list[list[int]]:
    """`[CLS] prompt [SEP] response [SEP]` as the model cards score (tokenizer(question, answer)),
    through the tokenizer's own post-processor. Too long: the prompt loses its start first (its
    end is the question being answered), then the response its end; the special tokens, [CLS]
    first, always stay."""
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    core = tokenizer.backend_tokenizer
    room = (max_length - core.num_special_tokens_to_add(True)) if max_length else None
    out = []
    for prompt, response in zip(prompts, responses):
        q = core.encode(prompt.strip(), add_special_tokens=False)
        a = core.encode(response.strip(), add_special_tokens=False)
        if room is not None and len(q) + len(a) > room:
            keep_a = max(room - min(len(q), room // 2), room - len(q))
            a.truncate(keep_a, direction="right")
            q.truncate(room - len(a), direction="left")
        out.append(core.post_process(q, a, add_special_tokens=True).ids)
    return out

def score_ids(model, ids: list[list[int]], pad_id: int, *, batch_size: int, progress: bool = False) -> list[float]:
    """Scores by length-sorted batches (little padding), returned in the original order."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [0.0] * len(ids)
    with torch.inference_mode(), tqdm(total=len(ids), desc="reward model", unit="text", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for i, s in zip(chunk, forward_scores(model, [ids[i] for i in chunk], pad_id).cpu().tolist()):
                out[i] = s
            bar.update(len(chunk))
    return out


# ---------------------------------------------------------------- Bradley–Terry training
def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean of -log σ(r_w - r_l) (Bradley & Terry, 1952; Ouyang et al., 2022, Eq. 1)."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def _load_base(base_model_path, seed: int, tmp: Path, trust_remote_code: bool):
    from bench.models import build_char_tokenizer, build_tiny_reward_model
    from trainers.models import load_model, load_tokenizer

    torch.manual_seed(seed)  # a fresh score head on an SFT checkpoint is drawn from this seed
    if base_model_path is None:
        tokenizer = build_char_tokenizer()
        path = build_tiny_reward_model(tmp / "base", tokenizer, seed=seed)
        return load_model(path, trust_remote_code=trust_remote_code, head="sequence_classification",
                          dtype=torch.float32), tokenizer
    model = load_model(str(base_model_path), trust_remote_code=trust_remote_code, head="sequence_classification",
                       dtype=torch.float32, num_labels=1)
    return model, load_tokenizer(str(base_model_path), trust_remote_code=trust_remote_code)


def _encode_pairs(tokenizer, pairs, max_length) -> list[tuple[list[int], list[int]]]:
    prompts = [p.prompt for p in pairs]
    messages = [getattr(p, "messages", None) for p in pairs]
    chosen, templated = render_texts(tokenizer, prompts, [p.chosen for p in pairs], messages)
    rejected, _ = render_texts(tokenizer, prompts, [p.rejected for p in pairs], messages)
    return list(zip(encode(tokenizer, chosen, templated, max_length), encode(tokenizer, rejected, templated, max_length)))


def pair_accuracy(model, encoded, pad_id: int, batch_size: int = 64) -> float | None:
    """Share of pairs scored r_chosen > r_rejected (None for no pairs)."""
    if not encoded:
        return None
    was_training = model.training
    model.eval()
    scores = score_ids(model, [c for c, _ in encoded] + [r for _, r in encoded], pad_id, batch_size=batch_size)
    model.train(was_training)
    n = len(encoded)
    return sum(scores[i] > scores[n + i] for i in range(n)) / n


def _split_heldout(pairs, fraction: float, seed: int):
    idx = list(range(len(pairs)))
    random.Random(f"reward-heldout-{seed}").shuffle(idx)
    k = int(round(len(pairs) * fraction)) if len(pairs) >= 5 else 0
    held = set(idx[:k])
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


def _total_steps(config, n_batches: int) -> int:
    if config.max_steps is not None:
        return config.max_steps
    return max(1, math.ceil(config.epochs * n_batches / config.grad_accum))


def _batches(n: int, batch_size: int, seed: int):
    """Endless stream of shuffled index batches, reshuffled each epoch by a seeded RNG."""
    rng = random.Random(f"reward-order-{seed}")
    while True:
        idx = list(range(n))
        rng.shuffle(idx)
        for start in range(0, n, batch_size):
            yield idx[start : start + batch_size]


def _optimise(model, encoded, pad_id: int, config, progress: bool) -> tuple[int, float]:
    """The AdamW loop; returns (optimiser steps, last step's loss)."""
    from transformers import get_scheduler

    device = next(model.parameters()).device
    steps = _total_steps(config, math.ceil(len(encoded) / config.batch_size))
    from trainers.trainer import _adamw, warmup_steps

    opt = _adamw(model, config, device)    # the policy trainer's rule: no decay on norms and biases
    sched = get_scheduler(config.scheduler, opt, num_warmup_steps=warmup_steps(config.warmup_ratio, steps),
                          num_training_steps=steps)
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    stream, loss_value = _batches(len(encoded), config.batch_size, config.seed), float("nan")
    model.train()
    for _ in tqdm(range(steps), desc="reward model training", unit="step", disable=not progress):
        total = 0.0
        for _ in range(config.grad_accum):
            chunk = [encoded[i] for i in next(stream)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                scores = forward_scores(model, [c for c, _ in chunk] + [r for _, r in chunk], pad_id)
            loss = bradley_terry_loss(scores[: len(chunk)], scores[len(chunk) :]) / config.grad_accum
            loss.backward()
            total += float(loss.detach())
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_value = total
    model.eval()
    return steps, loss_value


def heldout_accuracy_by_kind(model, tokenizer, pairs, pad_id: int, max_length: int, pair_kind=None) -> dict:
    """Held-out pair accuracy per kind of pair: what the judge has learnt to reward.

    `pair_kind(pair)` names the confound a pair carries (a builtin task knows it); without
    one, pairs are grouped by which response is longer in characters, the confound of
    real preference data. Returns {kind: {"accuracy": a, "n": n}}.
    """
    def by_length(pair) -> str:
        diff = len(pair.chosen) - len(pair.rejected)
        return "chosen_longer" if diff > 0 else "chosen_shorter" if diff < 0 else "equal_length"

    classify = pair_kind or by_length
    groups: dict[str, list] = {}
    for pair in pairs:
        groups.setdefault(classify(pair), []).append(pair)
    return {kind: {"accuracy": pair_accuracy(model, _encode_pairs(tokenizer, group, max_length), pad_id),
                   "n": len(group)} for kind, group in sorted(groups.items())}


def train_reward_model(pairs, base_model_path, out_dir, *, config, progress: bool = True,
                       heldout_fraction: float = 0.1, device=None, pair_kind=None,
                       trust_remote_code: bool = False) -> Path:
    """Train a Bradley–Terry reward model on preference pairs; returns the saved HF dir.

    ``base_model_path`` None builds the tiny Llama reward model with the char tokenizer;
    otherwise a model dir or SFT checkpoint gets a 1-label score head. A seeded share of
    the pairs is held out; ``reward_train.json`` records train and held-out pair accuracy.
    The directory appears only when complete (written to a temporary dir, then renamed).
    """
    pairs = [p for p in pairs if p.rejected]  # SFT demonstrations have no rejected response
    if not pairs:
        raise BenchError("reward model training got no preference pairs")
    if config.lora is not None:
        raise BenchError("reward_model.training.lora: LoRA is not supported for reward-model training")
    out = Path(out_dir)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model, tokenizer = _load_base(base_model_path, config.seed, tmp, trust_remote_code)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model.to(device)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        pad_id = _ensure_pad(model, tokenizer)
        train, heldout = _split_heldout(pairs, heldout_fraction, config.seed)
        max_len = min(config.max_length, _max_length(model) or config.max_length)
        enc_train, enc_held = _encode_pairs(tokenizer, train, max_len), _encode_pairs(tokenizer, heldout, max_len)
        torch.manual_seed(config.seed)
        steps, final_loss = _optimise(model, enc_train, pad_id, config, progress)
        report = {"train_accuracy": pair_accuracy(model, enc_train, pad_id),
                  "heldout_accuracy": pair_accuracy(model, enc_held, pad_id),
                  "heldout_by_kind": heldout_accuracy_by_kind(model, tokenizer, heldout, pad_id, max_len, pair_kind),
                  "n_train": len(train), "n_heldout": len(heldout), "steps": steps, "final_loss": final_loss,
                  "seed": config.seed, "base_model": None if base_model_path is None else str(base_model_path)}
        shutil.rmtree(tmp / "base", ignore_errors=True)
        model.to("cpu").save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / REWARD_TRAIN_FILE).write_text(json.dumps(report, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out

"""Reward-model scoring, and the data and report of the embedded default's judge.

A reward model is any `AutoModelForSequenceClassification` with one output: the score of
a (prompt, response) text read at its last non-padding token. It is trained by the one
training loop (`trainers.trainer.train` with `trainers.heads.BradleyTerry`: per pair
-log σ(r(x, y_w) - r(x, y_l)), Bradley & Terry, 1952; Ouyang et al., 2022, Eq. 1), with the
policy's scheduler, precision, batching, checkpoint and resume; this module prepares its
data (held-out split, the texts as the scorer encodes them) and reports its pair accuracy.
"""
from __future__ import annotations

import functools
import json
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench.errors import BenchError
from bench.evaluation.scoring.registry import register_scorer
from trainers.heads import BradleyTerry, Scores, ensure_pad, pad_right
from trainers.models import load_model, load_tokenizer, resolve_model
from trainers.tokenize import TokenizedPair
from trainers.trainer import read_log_lines, train

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


def forward_scores(model, ids: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Scores [N] of the id sequences in one padded forward (gradients flow when enabled)."""
    device = next(model.parameters()).device
    input_ids, mask = pad_right(ids, pad_id)
    return Scores(model)(input_ids.to(device), mask.to(device))


def _max_length(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


# ---------------------------------------------------------------- scoring
class RewardModelScorer:
    """Score (prompt, response) texts with a sequence-classification reward model."""

    def __init__(self, path_or_id, *, batch_size: int = 32, device=None, trust_remote_code: bool = False,
                 progress: bool = True):
        self.path = str(path_or_id)
        self.tokenizer = load_tokenizer(self.path, trust_remote_code=trust_remote_code)
        self.model = load_model(self.path, trust_remote_code=trust_remote_code, head="sequence_classification",
                                role="reward_model", device=device).eval()
        if self.model.config.num_labels != 1:
            raise BenchError(f"reward model {self.path} has {self.model.config.num_labels} labels; a reward model has 1")
        self.pad_id = ensure_pad(self.model, self.tokenizer)
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
def _base_model(base_model_path, seed: int, tmp: Path) -> str:
    """The model the reward model starts from: the given one, or the tiny Llama reward model
    (char tokenizer) built in code from `seed`."""
    if base_model_path is not None:
        return str(base_model_path)
    # Imported here: bench.models imports transformers at its top (seconds), which scoring with a
    # stored reward model, and the registry's import of every scorer, do not need.
    from bench.models import build_char_tokenizer, build_tiny_reward_model

    return str(build_tiny_reward_model(tmp / "base", build_char_tokenizer(), seed=seed))


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
                       heldout_fraction: float = 0.1, pair_kind=None, trust_remote_code: bool = False,
                       work_dir=None) -> Path:
    """Train a Bradley–Terry reward model on preference pairs; returns the saved HF dir.

    ``base_model_path`` None builds the tiny Llama reward model with the char tokenizer;
    otherwise a model dir or SFT checkpoint gets a 1-label score head. A seeded share of
    the pairs is held out; ``reward_train.json`` records train and held-out pair accuracy.
    Training runs in ``work_dir`` (resumable there; default: a temporary folder). The
    directory ``out_dir`` appears only when complete (written to a temporary dir, then renamed).
    """
    from transformers import AutoConfig

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
        base = _base_model(base_model_path, config.seed, tmp)
        tokenizer = load_tokenizer(base, trust_remote_code=trust_remote_code)
        positions = getattr(AutoConfig.from_pretrained(resolve_model(base), trust_remote_code=trust_remote_code),
                            "max_position_embeddings", None)
        max_len = min(config.max_length, positions or config.max_length)
        train_pairs, heldout = _split_heldout(pairs, heldout_fraction, config.seed)
        enc_train = _encode_pairs(tokenizer, train_pairs, max_len)
        data = [TokenizedPair(id=str(i), prompt_ids=[], chosen_ids=c, rejected_ids=r) for i, (c, r) in enumerate(enc_train)]
        result = train(model_path=base, objective=BradleyTerry(), train_data=data, config=config,
                       out_dir=Path(work_dir) if work_dir is not None else tmp / "train", progress=progress,
                       trust_remote_code=trust_remote_code)
        if result.status != "ok":
            raise BenchError(f"reward model training failed: {result.reason}")
        model = load_model(str(result.checkpoint), trust_remote_code=trust_remote_code,
                           head="sequence_classification", dtype=torch.float32).eval()
        pad_id = ensure_pad(model, tokenizer)
        log = read_log_lines(result.log_path)
        report = {"train_accuracy": pair_accuracy(model, enc_train, pad_id),
                  "heldout_accuracy": pair_accuracy(model, _encode_pairs(tokenizer, heldout, max_len), pad_id),
                  "heldout_by_kind": heldout_accuracy_by_kind(model, tokenizer, heldout, pad_id, max_len, pair_kind),
                  "n_train": len(train_pairs), "n_heldout": len(heldout), "steps": result.steps,
                  "final_loss": log[-1][1]["loss"] if log else None,
                  "seed": config.seed, "base_model": None if base_model_path is None else str(base_model_path)}
        final = tmp / "model"
        shutil.copytree(result.checkpoint, final)
        (final / REWARD_TRAIN_FILE).write_text(json.dumps(report, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(final, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------- the scorer
@functools.lru_cache(maxsize=1)
def _reward_scorer(path: str, batch_size: int, progress: bool, trust_remote_code: bool) -> RewardModelScorer:
    """Loaded once per suite: every policy is judged by the same reward model."""
    return RewardModelScorer(path, batch_size=batch_size, progress=progress, trust_remote_code=trust_remote_code)


def score_rewards(ctx, pairs: list, responses: list[str]) -> list[float]:
    """The suite's reward model's score of each response to its pair's prompt."""
    scorer = _reward_scorer(str(ctx.reward_model_dir), ctx.reward_batch_size, ctx.progress, ctx.trust_remote_code)
    return scorer.score([p.prompt for p in pairs], responses, [p.messages for p in pairs])


@register_scorer("reward_model", column="reward", order=10, needs_reward_model=True,
                 enabled=lambda ctx: ctx.reward_model_dir is not None,
                 metrics=("mean_reward", "win_rate_vs_reference", "lc_win_rate_vs_reference", "win_rate_vs_chosen"),
                 reference="Bradley & Terry 1952; Ouyang et al. 2022 (arXiv:2203.02155), Eq. 1; LC win rate: "
                           "Dubois et al. 2024 (arXiv:2404.04475)")
def score_samples(ctx, generations, pairs) -> list[float]:
    """The reward model's score of each sample."""
    return score_rewards(ctx, pairs, [g.text for g in generations])

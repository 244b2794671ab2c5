"""The two kinds of model the one training loop trains, and what one micro-batch computes.

- `PolicyHead`: a causal LM and an objective of the library on per-token response log-probs
  (every preference objective, and SFT as `nll`); the micro-batch is packed when the model
  supports it (`trainers.logps`).
- `RewardHead`: a sequence-classification model with one output, the reward model, trained
  with `BradleyTerry`; the micro-batch is the pairs' chosen and rejected texts in one
  right-padded forward (the packed layout serves response log-probs, not end-of-text scores).

Everything else (data order, optimiser, schedule, precision, clipping, logging, resume state,
the checkpoint) is the loop's own and the same for both (`trainers.trainer`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainers.data_order import DataOrder, RewardModelOrder
from trainers.logps import ResponseLogps, collate_pairs, split_logps, supports_packing


class BradleyTerry:
    """The reward model's objective: per pair  -log σ(r(x, y_w) - r(x, y_l))  (Bradley & Terry,
    1952; Ouyang et al., 2022, "InstructGPT", Eq. 1; Rafailov et al., 2023, "DPO", Eq. 2)."""

    name = "bradley_terry"
    head = "sequence_classification"
    needs_reference = False

    def __call__(self, r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
        return -F.logsigmoid(r_chosen - r_rejected)


def head_for(objective):
    """The head that trains `objective`: a reward head for Bradley–Terry, else a policy head."""
    return RewardHead(objective) if getattr(objective, "head", "causal_lm") == "sequence_classification" \
        else PolicyHead(objective)


class PolicyHead:
    auto = "causal_lm"

    def __init__(self, objective):
        self.objective = objective
        self.needs_reference = bool(getattr(objective, "needs_reference", False))

    def load_options(self) -> dict:
        return {}

    def data_order(self, n: int, cfg, global_batch: int):
        return DataOrder(n, global_batch, cfg.seed)

    def prepare(self, model, tokenizer) -> int:
        """The pad id of the collated batches."""
        return tokenizer.pad_token_id

    def wrap(self, model) -> nn.Module:
        return ResponseLogps(model)

    def can_pack(self, model) -> bool:
        return supports_packing(model)

    def forward(self, run, pairs):
        """(per-pair losses [B], a function returning the per-pair metrics, called without grad)."""
        from trainers.objectives import PairLogps, pair_metrics

        batch = collate_pairs(pairs, run.pad_id, run.ref, run.pack_to).to(run.acc.device)
        chosen, rejected, cmask, rmask = split_logps(run.wrapped(batch), batch)
        pair = PairLogps(policy_chosen=chosen, policy_rejected=rejected, ref_chosen=batch.ref_chosen,
                         ref_rejected=batch.ref_rejected, chosen_mask=cmask, rejected_mask=rmask)
        out = self.objective(pair)
        return out.losses, lambda: {**pair_metrics(pair), **out.metrics}


class RewardHead:
    """Pairs are `TokenizedPair`s whose `chosen_ids`/`rejected_ids` are the whole encoded texts
    (prompt and response, as the reward model scores them) and `prompt_ids` is empty."""

    auto = "sequence_classification"
    needs_reference = False

    def __init__(self, objective):
        self.objective = objective

    def load_options(self) -> dict:
        return {"num_labels": 1}     # a fresh one-output score head on a causal LM checkpoint

    def data_order(self, n: int, cfg, global_batch: int):
        return RewardModelOrder(n, cfg.batch_size, cfg.grad_accum, cfg.seed)

    def prepare(self, model, tokenizer) -> int:
        return ensure_pad(model, tokenizer)

    def wrap(self, model) -> nn.Module:
        return Scores(model)

    def can_pack(self, model) -> bool:
        return False

    def forward(self, run, pairs):
        n = len(pairs)
        ids = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
        input_ids, mask = pad_right(ids, run.pad_id)
        scores = run.wrapped(input_ids.to(run.acc.device), mask.to(run.acc.device))
        r_chosen, r_rejected = scores[:n], scores[n:]
        losses = self.objective(r_chosen, r_rejected)
        if n < run.cfg.batch_size:
            # An epoch's short last chunk (RewardModelOrder) is averaged over its own pairs, as
            # the reward model's loop did: the loop divides the sum by the full batch.
            losses = losses * (run.cfg.batch_size / n)
        return losses, lambda: {"reward/chosen": r_chosen, "reward/rejected": r_rejected,
                                "margin": r_chosen - r_rejected, "accuracy": (r_chosen > r_rejected).float()}


class Scores(nn.Module):
    """Wraps a sequence-classification model so that its forward returns one float score per
    row (distributed wrappers hook the forward of the module they wrap, see ResponseLogps)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self._no_split_modules = getattr(model, "_no_split_modules", None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()


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


def ensure_pad(model, tokenizer) -> int:
    """The pad id a sequence-classification model finds the last real token by."""
    # HF seq-cls models find the last real token via config.pad_token_id; unset, they fail
    # on batches or score the padding.
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.config.pad_token_id

"""The metrics every objective logs identically (docs/OBJECTIVES.md, last section).

The trainer calls `pair_metrics` on every batch, whatever the objective, so `margin` or
`accuracy` mean the same thing in every run. All values are detached float32 [B] tensors
(per pair, not batch means: the trainer averages them, which keeps pairs weighted equally
across gradient-accumulation steps).
"""
from __future__ import annotations

import torch

from .base import PairLogps, lengths, seq_logratios, seq_sum


@torch.no_grad()
def pair_metrics(pair: PairLogps) -> dict[str, torch.Tensor]:
    """Per-pair [B] tensors.

    Always: `logps/chosen` (policy sum s(y_w)), `len/chosen` (|y_w|). With rejected responses:
    `logps/rejected`, `len/rejected`. With a reference as well: `logratio/chosen` = r_w,
    `logratio/rejected` = r_l, `margin` = Δ = r_w − r_l and `accuracy` = [r_w > r_l] as 0/1.
    """
    out = {"logps/chosen": seq_sum(pair.policy_chosen, pair.chosen_mask),
           "len/chosen": lengths(pair.chosen_mask)}
    if pair.has_rejected:
        out["logps/rejected"] = seq_sum(pair.policy_rejected, pair.rejected_mask)
        out["len/rejected"] = lengths(pair.rejected_mask)
    if pair.has_rejected and pair.has_reference:
        r_w, r_l = seq_logratios(pair)
        out.update({"logratio/chosen": r_w, "logratio/rejected": r_l, "margin": r_w - r_l,
                    "accuracy": (r_w > r_l).float()})
    elif pair.ref_chosen is not None:
        out["logratio/chosen"] = seq_sum(pair.policy_chosen, pair.chosen_mask) - seq_sum(pair.ref_chosen,
                                                                                          pair.chosen_mask)
    return out

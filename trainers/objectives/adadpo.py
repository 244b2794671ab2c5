"""AdaDPO: self-adaptive DPO with balanced gradients (Chen, Ciobanu, Mao, Das 2026, arXiv:2605.28440)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import HyperParameter, ObjectiveOutput, PairLogps, beta_param, register, seq_logratios, seq_sum, lengths


def balance_log_ratio(pair: PairLogps, balance_space: str, length_normalize: bool) -> torch.Tensor:
    """log ρ = b_w/|y_w| − b_l/|y_l| (or b_w − b_l), with b = r (ratio) or b = s (policy); detached."""
    if balance_space == "ratio":
        b_w, b_l = seq_logratios(pair)
    else:
        b_w, b_l = seq_sum(pair.policy_chosen, pair.chosen_mask), seq_sum(pair.policy_rejected, pair.rejected_mask)
    if length_normalize:
        b_w = b_w / lengths(pair.chosen_mask).clamp(min=1.0)
        b_l = b_l / lengths(pair.rejected_mask).clamp(min=1.0)
    return (b_w - b_l).detach()


@register("adadpo", needs_reference=True,
          paper="Chen, Ciobanu, Mao, Das 2026, AdaDPO: self-adaptive DPO with balanced gradients "
                "(arXiv:2605.28440)",
          hyperparameters=(
              beta_param(0.1),
              HyperParameter("balance_space", "ratio", "choice",
                             "balance gradients w.r.t. policy/reference ratios (ratio) or policy probabilities "
                             "(policy)", choices=("ratio", "policy")),
              HyperParameter("length_normalize", True, "bool", "per-token (true, the paper's form) or summed log ρ"),
              HyperParameter("clip", 2.0, "float", "upper bound C on ρ (no lower clip)", low=0.0, low_open=True)))
def adadpo(pair: PairLogps, *, beta: float, balance_space: str, length_normalize: bool,
           clip: float) -> ObjectiveOutput:
    """AdaDPO (Chen et al. 2026, arXiv:2605.28440): ℓ = −log σ(β_w·r_w − β·r_l), β_w = β·min(ρ, C).

    ρ is a per-pair stop-gradient coefficient that equalises the per-token gradient magnitudes
    of chosen and rejected (docs/OBJECTIVES.md). Metrics: `beta_w`, `beta_r_w` = β·r_w,
    `beta_w_r_w` = β_w·r_w (the loss is not comparable to DPO's, so both are logged).
    """
    log_rho = balance_log_ratio(pair, balance_space, length_normalize)
    beta_w = beta * torch.exp(torch.clamp(log_rho, max=math.log(clip)))
    r_w, r_l = seq_logratios(pair)
    losses = -F.logsigmoid(beta_w * r_w - beta * r_l)
    metrics = {"beta_w": beta_w, "log_rho": log_rho, "beta_r_w": (beta * r_w).detach(),
               "beta_w_r_w": (beta_w * r_w).detach()}
    return ObjectiveOutput(losses, metrics)

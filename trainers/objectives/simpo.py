"""SimPO: reference-free, length-normalised margin with a target reward gap."""
from __future__ import annotations

import torch.nn.functional as F

from .base import HyperParameter, ObjectiveOutput, PairLogps, beta_param, register, seq_mean


@register("simpo", needs_reference=False,
          paper="Meng, Xia, Chen 2024, SimPO: Simple Preference Optimization with a Reference-Free Reward "
                "(arXiv:2405.14734)",
          hyperparameters=(beta_param(2.0, "reward scale β (> 0)"),
                           HyperParameter("gamma_beta_ratio", 0.25, "float",
                                          "target reward margin γ as a multiple of β (γ = β·ratio)", low=0.0)))
def simpo(pair: PairLogps, *, beta: float, gamma_beta_ratio: float) -> ObjectiveOutput:
    """SimPO (Meng et al. 2024, arXiv:2405.14734, eq. 6): ℓ = −log σ(β·(s_w/|y_w| − s_l/|y_l|) − γ), γ = β·ratio."""
    margin = seq_mean(pair.policy_chosen, pair.chosen_mask) - seq_mean(pair.policy_rejected, pair.rejected_mask)
    return ObjectiveOutput(-F.logsigmoid(beta * margin - beta * gamma_beta_ratio))

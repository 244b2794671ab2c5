"""DPO and its close relatives (IPO, hinge, robust): losses of the sequence margin Δ = r_w − r_l."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import HyperParameter, ObjectiveOutput, PairLogps, beta_param, register, seq_logratios, seq_mean, \
    token_logratios

_EPS_RANGE = dict(low=0.0, high=0.5, high_open=True)


def _margin(pair: PairLogps) -> torch.Tensor:
    r_w, r_l = seq_logratios(pair)
    return r_w - r_l


@register("dpo", needs_reference=True,
          paper="Rafailov et al. 2023, Direct Preference Optimization (arXiv:2305.18290); "
                "label smoothing: Mitchell 2023, conservative DPO",
          hyperparameters=(beta_param(0.1),
                           HyperParameter("label_smoothing", 0.0, "float",
                                          "ε: assumed probability that a preference label is flipped", **_EPS_RANGE)))
def dpo(pair: PairLogps, *, beta: float, label_smoothing: float) -> ObjectiveOutput:
    """DPO (Rafailov et al. 2023, arXiv:2305.18290): ℓ = −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ)."""
    logits = beta * _margin(pair)
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return ObjectiveOutput(losses)


@register("ipo", needs_reference=True,
          paper="Azar et al. 2023, A General Theoretical Paradigm to Understand Learning from Human "
                "Preferences (arXiv:2310.12036)",
          hyperparameters=(beta_param(0.1, "regularisation τ (> 0); the target margin is 1/(2β)"),
                           HyperParameter("length_normalize", True, "bool",
                                          "use per-token mean log-ratios (as TRL and the IPO authors) "
                                          "instead of sequence sums")))
def ipo(pair: PairLogps, *, beta: float, length_normalize: bool) -> ObjectiveOutput:
    """IPO (Azar et al. 2023, arXiv:2310.12036, eq. 17): ℓ = (r_w/|y_w| − r_l/|y_l| − 1/(2β))².

    With `length_normalize=False` the summed form (Δ − 1/(2β))².
    """
    if length_normalize:
        h_w, h_l = token_logratios(pair)
        margin = seq_mean(h_w, pair.chosen_mask) - seq_mean(h_l, pair.rejected_mask)
    else:
        margin = _margin(pair)
    return ObjectiveOutput((margin - 1.0 / (2.0 * beta)) ** 2)


@register("hinge", needs_reference=True,
          paper="Zhao et al. 2023, SLiC-HF (arXiv:2305.10425); Liu et al. 2023, RSO (arXiv:2309.06657)",
          hyperparameters=(beta_param(0.1),))
def hinge(pair: PairLogps, *, beta: float) -> ObjectiveOutput:
    """Hinge loss of SLiC-HF (Zhao et al. 2023, arXiv:2305.10425) / RSO: ℓ = max(0, 1 − βΔ)."""
    return ObjectiveOutput(torch.relu(1.0 - beta * _margin(pair)))


@register("robust", needs_reference=True,
          paper="Chowdhury et al. 2024, Provably Robust DPO (arXiv:2403.00409)",
          hyperparameters=(beta_param(0.1),
                           HyperParameter("epsilon", 0.1, "float", "ε: label flip rate the loss is unbiased for",
                                          **_EPS_RANGE)))
def robust(pair: PairLogps, *, beta: float, epsilon: float) -> ObjectiveOutput:
    """Robust DPO (Chowdhury et al. 2024, arXiv:2403.00409): [−(1−ε)·log σ(βΔ) + ε·log σ(−βΔ)] / (1−2ε)."""
    logits = beta * _margin(pair)
    losses = (-(1 - epsilon) * F.logsigmoid(logits) + epsilon * F.logsigmoid(-logits)) / (1 - 2 * epsilon)
    return ObjectiveOutput(losses)

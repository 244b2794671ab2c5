"""Token-mean negative log-likelihood of the chosen response (SFT alone; RPO inside a composite)."""
from __future__ import annotations

from .base import ObjectiveOutput, PairLogps, register, seq_mean


@register("nll", needs_reference=False, pairwise=False,
          paper="supervised fine-tuning; as an added term: Pang et al. 2024, Iterative Reasoning Preference "
                "Optimization (RPO, arXiv:2404.19733)")
def nll(pair: PairLogps) -> ObjectiveOutput:
    """NLL (SFT; the extra term of RPO, Pang et al. 2024, arXiv:2404.19733): ℓ = −s(y_w)/|y_w|."""
    return ObjectiveOutput(-seq_mean(pair.policy_chosen, pair.chosen_mask))

"""ADPO: Autoregressive DPO (Oi, Ukai, Kaneko, Okazaki, Inoue 2026, arXiv:2602.09533).

A prefix-wise Bradley–Terry model moves the sum over positions outside the log-sigmoid:
each response is cut into T′ consecutive segments and

    ℓ = − Σ_{i=1..T′} log σ( β·S_i(y_w) − β·S_i(y_l) ),   S_i(y) = Σ_{t in segment i} h[t].

Segment sums are computed for the whole batch at once with `scatter_add` over segment ids.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import HyperParameter, ObjectiveOutput, PairLogps, beta_param, register, token_logratios


def token_positions(mask: torch.Tensor) -> torch.Tensor:
    """Index of each response token inside its response (0, 1, …), -1 on padding; [B, T] long.

    Counted from the mask rather than the column, so responses need not start at column 0.
    """
    keep = mask.bool()
    return torch.where(keep, keep.long().cumsum(-1) - 1, torch.full_like(keep, -1, dtype=torch.long))


def static_ids(positions: torch.Tensor, k: int) -> torch.Tensor:
    """Window id ⌊pos/k⌋ of every token (windows [(i−1)k, ik)); -1 on padding."""
    return torch.where(positions >= 0, torch.div(positions, k, rounding_mode="floor"), positions)


def adaptive_ids(positions: torch.Tensor, length: torch.Tensor, m: int) -> torch.Tensor:
    """Segment id of every token when a response of `length` tokens is cut into m segments.

    Boundaries b_j = ⌊j·|y|/m⌋ put the larger segments last. Token p lies in the largest j with
    b_j ≤ p, i.e. j·|y| < (p+1)·m, so j = ⌈(p+1)·m/|y|⌉ − 1 = ⌊((p+1)·m − 1)/|y|⌋ (exact integers).
    """
    length = length.long().clamp(min=1)[:, None]
    ids = torch.div((positions + 1) * m - 1, length, rounding_mode="floor")
    return torch.where(positions >= 0, ids, positions)


def adaptive_segment_ids(lengths: torch.Tensor, m: int, T: int) -> torch.Tensor:
    """[B, T] adaptive segment ids for right-padded responses of the given lengths (-1 past the end)."""
    positions = torch.arange(T)[None, :].expand(len(lengths), T)
    positions = torch.where(positions < lengths[:, None], positions, torch.full_like(positions, -1))
    return adaptive_ids(positions, lengths, m)


def segment_sums(h: torch.Tensor, ids: torch.Tensor, n_segments: int) -> torch.Tensor:
    """[B, n_segments] sums of h over each segment id (padding, id -1, contributes nothing)."""
    valid = ids >= 0
    sums = torch.zeros(h.shape[0], n_segments, dtype=h.dtype, device=h.device)
    # Padding is sent to slot 0 with value 0 (h is already 0 there), which leaves the sum unchanged.
    return sums.scatter_add(1, torch.where(valid, ids, torch.zeros_like(ids)), torch.where(valid, h, 0.0))


def _segments(pair: PairLogps, granularity: str, k: int, m: int):
    """(S_w, S_l, active) with active[b, i] marking the T′ comparisons of pair b."""
    h_w, h_l = token_logratios(pair)
    pos_w, pos_l = token_positions(pair.chosen_mask), token_positions(pair.rejected_mask)
    len_w, len_l = pos_w.max(-1).values + 1, pos_l.max(-1).values + 1
    if granularity == "adaptive":
        ids_w, ids_l = adaptive_ids(pos_w, len_w, m), adaptive_ids(pos_l, len_l, m)
        n = m
        feedback = torch.full_like(len_w, m)
    else:
        ids_w, ids_l = static_ids(pos_w, k), static_ids(pos_l, k)
        # The shorter response is padded (h = 0) to T_max = max(|y_w|, |y_l|): ⌈T_max/k⌉ windows.
        feedback = torch.div(torch.maximum(len_w, len_l) + k - 1, k, rounding_mode="floor")
        n = max(int(feedback.max()), 1)
    s_w, s_l = segment_sums(h_w, ids_w, n), segment_sums(h_l, ids_l, n)
    active = torch.arange(n, device=s_w.device)[None, :] < feedback[:, None]
    return s_w, s_l, active, feedback


@register("adpo", needs_reference=True,
          paper="Oi, Ukai, Kaneko, Okazaki, Inoue 2026, Autoregressive Direct Preference Optimization "
                "(arXiv:2602.09533)",
          hyperparameters=(
              beta_param(0.1),
              HyperParameter("granularity", "static", "choice",
                             "static: fixed windows of k tokens (k=1 is the token-level form); "
                             "adaptive: each response cut into m segments (m=1 is DPO)",
                             choices=("static", "adaptive")),
              HyperParameter("k", 1, "int", "static window in tokens (used when granularity=static)", low=1),
              HyperParameter("m", 256, "int", "number of segments per response (used when granularity=adaptive; "
                                              "256 is the paper's best overall)", low=1)))
def adpo(pair: PairLogps, *, beta: float, granularity: str, k: int, m: int) -> ObjectiveOutput:
    """ADPO (Oi et al. 2026, arXiv:2602.09533): ℓ = −Σ_{i≤T′} log σ(β·S_i(y_w) − β·S_i(y_l)).

    Default: static k=1, the token-level form −Σ_i log σ(β·h_w[i] − β·h_l[i]). Metric
    `feedback_length` is T′, the number of comparisons per pair (static: ⌈max(|y_w|,|y_l|)/k⌉;
    adaptive: m, empty segments having S = 0).
    """
    s_w, s_l, active, feedback = _segments(pair, granularity, k, m)
    terms = -F.logsigmoid(beta * (s_w - s_l))
    losses = torch.where(active, terms, torch.zeros_like(terms)).sum(-1)
    return ObjectiveOutput(losses, {"feedback_length": feedback.float()})

"""Likelihood drift on held-out preference pairs.

DPO-style training can lower the likelihood of the *chosen* response while it widens the
chosen-rejected margin ("likelihood displacement"; Razin et al., 2024, "Unintentional
Unalignment"; Pal et al., 2024, "Smaug/DPOP"). We measure it with the log-ratios to the
reference policy of Rafailov et al. (2023), "Direct Preference Optimization", Eq. 5 with
beta = 1: r_w = log pi(y_w|x) - log pi_ref(y_w|x), r_l likewise for the rejected response.
"""
from __future__ import annotations

from collections.abc import Sequence

import json

import torch
from tqdm.auto import tqdm

from bench.evaluation.scoring.registry import register_scorer
from trainers.logps import collate_pairs, pair_logps
from trainers.models import load_model


def _masked_sum(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (logps.float() * mask.float()).sum(-1)


def drift_arrays(policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask) -> dict:
    """Per-pair drift quantities (1-D float tensors of length B), for intervals downstream.

    Inputs are per-token log-prob tensors [B, T] over the response axis with 0/1 masks, as
    produced by `trainers.logps.pair_logps`; reference tensors share the policy's masks.
    """
    n_w = chosen_mask.float().sum(-1).clamp_min(1.0)  # clamp: an empty response counts as 1 token
    n_l = rejected_mask.float().sum(-1).clamp_min(1.0)
    r_w = _masked_sum(policy_chosen, chosen_mask) - _masked_sum(ref_chosen, chosen_mask)
    r_l = _masked_sum(policy_rejected, rejected_mask) - _masked_sum(ref_rejected, rejected_mask)
    return {"r_w": r_w, "r_l": r_l, "r_w_per_token": r_w / n_w, "r_l_per_token": r_l / n_l}


def drift_metrics(policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask) -> dict:
    """Mean drift metrics over pairs, plus the per-pair lists under ``per_pair``.

    Keys: r_w, r_l (summed log-ratios), r_w_per_token, r_l_per_token, chosen_logp_down
    (share of pairs with r_w < 0), reward_accuracy (share with r_w > r_l), margin
    (mean r_w - r_l), n (pairs).
    """
    arr = drift_arrays(policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask)
    if arr["r_w"].numel() == 0:
        raise ValueError("drift_metrics needs at least one pair")
    out = {k: float(v.mean()) for k, v in arr.items()}
    out["chosen_logp_down"] = float((arr["r_w"] < 0).float().mean())
    out["reward_accuracy"] = float((arr["r_w"] > arr["r_l"]).float().mean())
    out["margin"] = float((arr["r_w"] - arr["r_l"]).mean())
    out["n"] = int(arr["r_w"].numel())
    out["per_pair"] = {k: v.tolist() for k, v in arr.items()}
    return out


def _pad_rows(rows: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width, dtype=torch.float32)
    for i, row in enumerate(rows):
        n = min(len(row), width)
        out[i, :n] = torch.as_tensor(row[:n], dtype=torch.float32)
    return out


def compute_drift(policy_model_path, ref_logps: dict, tokenized_pairs, *, batch_size: int = 16,
                  device=None, progress: bool = True, trust_remote_code: bool = False) -> dict:
    """Run the policy over held-out tokenized pairs and compare with cached reference log-probs.

    ``ref_logps`` maps pair id -> (chosen 1-D, rejected 1-D) per-token log-probs, as returned
    by `trainers.reference.reference_logps` on the same tokenized pairs.
    """
    pairs = [p for p in tokenized_pairs if p.rejected_ids is not None]  # SFT demos carry no pair
    if not pairs:
        raise ValueError("compute_drift needs at least one preference pair")
    missing = [p.id for p in pairs if p.id not in ref_logps]
    if missing:
        raise KeyError(f"reference log-probs lack pair {missing[0]!r} ({len(missing)} missing)")
    model = load_model(str(policy_model_path), trust_remote_code=trust_remote_code, role="drift", device=device).eval()
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("pc", "pr", "rc", "rr", "cm", "rm")}
    with torch.inference_mode():
        for start in tqdm(range(0, len(pairs), batch_size), desc="drift", unit="batch", disable=not progress):
            chunk = pairs[start:start + batch_size]
            batch = collate_pairs(chunk, pad_id).to(next(model.parameters()).device)
            pc, pr, cm, rm = (t.float().cpu() for t in pair_logps(model, batch))
            for key, value in zip(("pc", "pr", "cm", "rm"), (pc, pr, cm, rm)):
                parts[key].append(value)
            parts["rc"].append(_pad_rows([ref_logps[p.id][0] for p in chunk], pc.shape[1]))
            parts["rr"].append(_pad_rows([ref_logps[p.id][1] for p in chunk], pr.shape[1]))
    # Batches differ in width: pad every part to the widest (masks are 0 there).
    width = max(t.shape[1] for t in parts["pc"] + parts["pr"])
    cat = {k: torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in v]) for k, v in parts.items()}
    out = drift_metrics(cat["pc"], cat["pr"], cat["rc"], cat["rr"], cat["cm"], cat["rm"])
    out["pair_ids"] = [p.id for p in pairs]   # per_pair lists follow this order: pairs policies by id
    return out


@register_scorer("drift", kind="policy", order=30, on_reference=False, needs_drift_pairs=True,
                 enabled=lambda ctx: bool(ctx.drift_data) and ctx.drift_reference is not None,
                 metrics=("logratio_chosen", "logratio_rejected", "logratio_chosen_per_token",
                          "logratio_rejected_per_token", "chosen_logp_down", "implicit_accuracy", "margin"),
                 reference="Rafailov et al. 2023 (arXiv:2305.18290), Eq. 5; Razin et al. 2024 (arXiv:2410.08847)")
def run_drift(policy_dir, ctx, out_dir) -> None:
    """drift.json: the policy's log-ratios to the reference on the held-out pairs."""
    drift = compute_drift(str(policy_dir), ctx.drift_reference, ctx.drift_data, progress=ctx.progress,
                          trust_remote_code=ctx.trust_remote_code)
    (out_dir / "drift.json").write_text(json.dumps(drift, sort_keys=True))

"""Per-token log-probs of response tokens: one concatenated forward, memory-lean.

Chosen and rejected sequences are stacked into one batch ([chosen; rejected]) and padded to
the batch's longest sequence, so the policy runs one forward per micro-batch. The language
model head is applied only at the positions that predict a response token (prompt and
padding positions never reach the vocabulary projection), and the log-prob of the realised
token is `logit[label] - logsumexp(logits)`, computed in chunks of positions so a float32
log-softmax over [B, T, V] is never materialised.

Padding is on the right and no attention mask is passed: under causal attention a real
token never attends to a later (padding) position, so the logits we read are exactly those
of the unpadded sequence, and the model can use its fused causal attention path.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

# Positions per vocabulary-projection chunk: bounds the [chunk, V] float32 buffer.
CHUNK_POSITIONS = 2048


@dataclass
class PairBatch:
    """A collated micro-batch of TokenizedPairs (rows: all chosen, then all rejected)."""

    input_ids: torch.Tensor          # [N, L] with N = B (SFT) or 2B
    src_rows: torch.Tensor           # [M] row of each response token
    src_pos: torch.Tensor            # [M] position whose hidden state predicts it (token pos - 1)
    labels: torch.Tensor             # [M] the response token ids
    out_cols: torch.Tensor           # [M] column on the response axis
    chosen_lens: torch.Tensor        # [B]
    rejected_lens: torch.Tensor | None
    ids: list[str]
    ref_chosen: torch.Tensor | None = None     # [B, Tr] reference log-probs, when given
    ref_rejected: torch.Tensor | None = None

    @property
    def n_pairs(self) -> int:
        return len(self.ids)

    @property
    def num_tokens(self) -> int:
        """Tokens the forward processes (padding included)."""
        return self.input_ids.numel()

    def to(self, device) -> "PairBatch":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return PairBatch(**moved)


def collate_pairs(pairs, pad_id: int, reference: dict | None = None) -> PairBatch:
    """Stack [chosen; rejected] sequences (prompt + response), right-padded to the batch max."""
    sft = pairs[0].rejected_ids is None
    seqs = [(p.prompt_ids, p.chosen_ids) for p in pairs]
    if not sft:
        seqs += [(p.prompt_ids, p.rejected_ids) for p in pairs]
    width = max(len(pr) + len(rs) for pr, rs in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    rows, pos, cols = [], [], []
    for r, (prompt, resp) in enumerate(seqs):
        input_ids[r, : len(prompt) + len(resp)] = torch.tensor(prompt + resp, dtype=torch.long)
        start = len(prompt)
        rows.append(torch.full((len(resp),), r, dtype=torch.long))
        pos.append(torch.arange(start - 1, start - 1 + len(resp)))
        cols.append(torch.arange(len(resp)))
    rows, pos, cols = torch.cat(rows), torch.cat(pos), torch.cat(cols)
    batch = PairBatch(
        input_ids=input_ids,
        src_rows=rows,
        src_pos=pos,
        labels=input_ids[rows, pos + 1],
        out_cols=cols,
        chosen_lens=torch.tensor([len(p.chosen_ids) for p in pairs]),
        rejected_lens=None if sft else torch.tensor([len(p.rejected_ids) for p in pairs]),
        ids=[p.id for p in pairs],
    )
    if reference is not None:
        batch.ref_chosen = _pad([reference[p.id][0] for p in pairs])
        batch.ref_rejected = None if sft else _pad([reference[p.id][1] for p in pairs])
    return batch


def _pad(vectors: list[torch.Tensor]) -> torch.Tensor:
    return nn.utils.rnn.pad_sequence([v.float() for v in vectors], batch_first=True)


def _token_logps(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return logits.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def flat_logps(model: nn.Module, batch: PairBatch) -> torch.Tensor:
    """Log-probs [M] of every response token in `batch`, in PairBatch order (float32)."""
    body, head = model.get_decoder(), model.get_output_embeddings()
    hidden = body(input_ids=batch.input_ids, use_cache=False).last_hidden_state
    hidden = hidden[batch.src_rows, batch.src_pos]
    pieces = []
    for start in range(0, hidden.shape[0], CHUNK_POSITIONS):
        h, y = hidden[start : start + CHUNK_POSITIONS], batch.labels[start : start + CHUNK_POSITIONS]
        if torch.is_grad_enabled() and hidden.shape[0] > CHUNK_POSITIONS:
            # Recompute the chunk's logits in backward instead of keeping every chunk alive.
            pieces.append(checkpoint(_token_logps, head, h, y, use_reentrant=False))
        else:
            pieces.append(_token_logps(head, h, y))
    return torch.cat(pieces)


def split_logps(flat: torch.Tensor, batch: PairBatch):
    """Flat response log-probs -> (chosen [B,Tr], rejected [B,Tr'] | None, chosen_mask, rejected_mask)."""
    b = batch.n_pairs
    out_rows = batch.src_rows
    n_rows = b if batch.rejected_lens is None else 2 * b
    width = int(batch.out_cols.max()) + 1
    dense = flat.new_zeros(n_rows, width).index_put((out_rows, batch.out_cols), flat)
    mask = torch.zeros(n_rows, width, dtype=torch.bool, device=flat.device)
    mask[out_rows, batch.out_cols] = True
    tc = int(batch.chosen_lens.max())
    chosen, chosen_mask = dense[:b, :tc], mask[:b, :tc]
    if batch.rejected_lens is None:
        return chosen, None, chosen_mask.float(), None
    tr = int(batch.rejected_lens.max())
    return chosen, dense[b:, :tr], chosen_mask.float(), mask[b:, :tr].float()


def pair_logps(model: nn.Module, batch: PairBatch):
    """Per-token response log-probs for a collated batch (docs/CONTRACTS.md).

    Returns (policy_chosen [B,Tr], policy_rejected [B,Tr'], chosen_mask, rejected_mask),
    right-padded float32 on the response axis; rejected entries are None for SFT batches.
    """
    return split_logps(flat_logps(model, batch), batch)


class ResponseLogps(nn.Module):
    """Wraps a causal LM so that its forward returns flat response log-probs.

    Distributed wrappers (DDP via accelerate) hook the *forward* of the module they wrap;
    wrapping this module keeps the body + head computation inside that forward.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: PairBatch) -> torch.Tensor:
        return flat_logps(self.model, batch)

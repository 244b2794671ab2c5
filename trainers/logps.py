"""Per-token log-probs of response tokens: one forward per micro-batch, memory-lean.

The language model head is applied only at the positions that predict a response token
(prompt and padding positions never reach the vocabulary projection), and the log-prob of
the realised token is `logit[label] - logsumexp(logits)`, computed in chunks of positions so
a float32 log-softmax over [B, T, V] is never materialised.

Two layouts of a micro-batch, the same values (to float rounding):
- padded (`pack_to=None`): one row per sequence ([chosen; rejected] stacked), right-padded,
  no attention mask. Under causal attention a real token never attends to a later
  (padding) position, so the logits we read are those of the unpadded sequence.
- packed with a shared prompt (`pack_to=C`): each pair becomes one segment
  [prompt | chosen | rejected]; segments are spread over the fewest rows of at most C
  tokens (or the longest segment) that hold them, balanced so rows are about equally full. A 4-D attention mask lets each token see only
  earlier tokens of its own segment, and rejected tokens skip the chosen part, so the
  rejected response attends to [prompt | rejected] exactly as in its own sequence;
  `position_ids` give rejected tokens the positions they would have there. The prompt is
  therefore run once per pair instead of twice, and padding is only what is left at the
  end of a row: for prompts as long as the responses the forward processes about 30% fewer
  tokens than the two sequences, and far fewer than the padded layout. This is the
  "prefix sharing" of Wang et al., 2024, "Accelerating Direct Preference Optimization with
  Prefix Sharing" (arXiv:2410.20305). Both chosen[0] and rejected[0] are predicted from the
  last prompt position. Models whose attention does not honour a custom 4-D mask (e.g.
  flash-attention kernels) are detected by `supports_packing` and use the padded layout.
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
    """A collated micro-batch of TokenizedPairs. Response tokens are listed flat (M of them):
    all chosen responses, then all rejected ones, each in token order."""

    input_ids: torch.Tensor          # [R, L]: one row per sequence (padded) or packed rows
    src_rows: torch.Tensor           # [M] input row whose hidden state predicts each response token
    src_pos: torch.Tensor            # [M] position in that row
    labels: torch.Tensor             # [M] the response token ids
    out_rows: torch.Tensor           # [M] sequence of each token: 0..B-1 chosen, B..2B-1 rejected
    out_cols: torch.Tensor           # [M] column on the response axis
    chosen_lens: torch.Tensor        # [B]
    rejected_lens: torch.Tensor | None
    ids: list[str]
    ref_chosen: torch.Tensor | None = None     # [B, Tr] reference log-probs, when given
    ref_rejected: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None   # [R, L] when packed
    segments: torch.Tensor | None = None       # [R, L] segment of each position when packed (padding: -1 - pos)
    parts: torch.Tensor | None = None          # [R, L] 0 prompt, 1 chosen, 2 rejected, when packed

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


PROMPT, CHOSEN, REJECTED = 0, 1, 2


def _is_sft(pairs) -> bool:
    """SFT demonstrations carry a chosen response only."""
    return pairs[0].rejected_ids is None


def collate_pairs(pairs, pad_id: int, reference: dict | None = None, pack_to: int | None = None) -> PairBatch:
    """Lay out a micro-batch for one forward: padded rows, or packed segments with `pack_to`
    (see the module docstring)."""
    batch = _collate_packed(pairs, pad_id, pack_to) if pack_to is not None else _collate_padded(pairs, pad_id)
    if reference is not None:
        batch.ref_chosen = _pad([reference[p.id][0] for p in pairs])
        batch.ref_rejected = None if _is_sft(pairs) else _pad([reference[p.id][1] for p in pairs])
    return batch


def _responses(pairs):
    """Response token lists in output order: all chosen, then all rejected (none for SFT)."""
    out = [p.chosen_ids for p in pairs]
    if not _is_sft(pairs):
        out += [p.rejected_ids for p in pairs]
    return out


def _finish(pairs, input_ids, rows, pos, **layout) -> PairBatch:
    """The batch, given each response's source rows and positions in `_responses` order."""
    responses = _responses(pairs)
    return PairBatch(
        input_ids=input_ids,
        src_rows=torch.cat(rows),
        src_pos=torch.cat(pos),
        labels=torch.tensor([t for r in responses for t in r], dtype=torch.long),
        out_rows=torch.cat([torch.full((len(r),), s, dtype=torch.long) for s, r in enumerate(responses)]),
        out_cols=torch.cat([torch.arange(len(r)) for r in responses]),
        chosen_lens=torch.tensor([len(p.chosen_ids) for p in pairs]),
        rejected_lens=None if _is_sft(pairs) else torch.tensor([len(p.rejected_ids) for p in pairs]),
        ids=[p.id for p in pairs],
        **layout,
    )


def _collate_padded(pairs, pad_id: int) -> PairBatch:
    """One right-padded row per sequence: [prompt+chosen ...; prompt+rejected ...]."""
    responses = _responses(pairs)
    prompts = [p.prompt_ids for p in pairs] * (len(responses) // len(pairs))
    width = max(len(pr) + len(r) for pr, r in zip(prompts, responses))
    input_ids = torch.full((len(responses), width), pad_id, dtype=torch.long)
    rows, pos = [], []
    for r, (prompt, resp) in enumerate(zip(prompts, responses)):
        input_ids[r, : len(prompt) + len(resp)] = torch.tensor(prompt + resp, dtype=torch.long)
        rows.append(torch.full((len(resp),), r, dtype=torch.long))
        pos.append(torch.arange(len(prompt) - 1, len(prompt) + len(resp) - 1))
    return _finish(pairs, input_ids, rows, pos)


def _collate_packed(pairs, pad_id: int, pack_to: int) -> PairBatch:
    """Segments [prompt | chosen | rejected] packed into balanced rows (`_pack`)."""
    sft = _is_sft(pairs)
    seg_lens = [len(p.prompt_ids) + len(p.chosen_ids) + (0 if sft else len(p.rejected_ids)) for p in pairs]
    placement, fills = _pack(seg_lens, max(pack_to, max(seg_lens)))
    n_rows, width = len(fills), max(fills)
    input_ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    # Padding at a row's end is a segment of its own (it attends only to itself), so no
    # query row of the mask is empty.
    position_ids = torch.zeros((n_rows, width), dtype=torch.long)   # set per segment, then for padding
    segments = -1 - torch.arange(width).repeat(n_rows, 1)
    parts = torch.full((n_rows, width), PROMPT, dtype=torch.int8)
    chosen_src, rejected_src = [], []
    for i, (p, (row, at)) in enumerate(zip(pairs, placement)):
        n_p, n_c = len(p.prompt_ids), len(p.chosen_ids)
        seq = p.prompt_ids + p.chosen_ids + ([] if sft else p.rejected_ids)
        input_ids[row, at : at + len(seq)] = torch.tensor(seq, dtype=torch.long)
        segments[row, at : at + len(seq)] = i
        position_ids[row, at : at + n_p + n_c] = torch.arange(n_p + n_c)
        parts[row, at + n_p : at + n_p + n_c] = CHOSEN
        # chosen token j is predicted from position j-1 of [prompt | chosen]
        chosen_src.append((row, torch.arange(at + n_p - 1, at + n_p + n_c - 1)))
        if not sft:
            n_r, r0 = len(p.rejected_ids), at + n_p + n_c
            position_ids[row, r0 : r0 + n_r] = torch.arange(n_p, n_p + n_r)
            parts[row, r0 : r0 + n_r] = REJECTED
            # rejected[0] from the prompt's last position; rejected[j] from rejected[j-1]
            rejected_src.append((row, torch.cat([torch.tensor([at + n_p - 1]), torch.arange(r0, r0 + n_r - 1)])))
    for row, used in enumerate(fills):
        position_ids[row, used:] = torch.arange(width - used)
    src = chosen_src + rejected_src
    return _finish(pairs, input_ids, [torch.full_like(pos, row) for row, pos in src], [pos for _, pos in src],
                   position_ids=position_ids, segments=segments, parts=parts)


def _pack(lengths: list[int], capacity: int):
    """Place items in as few rows of at most `capacity` tokens as fit, balanced so the rows
    are about equally full (the tensor is as wide as its fullest row, so balance is what
    keeps padding low). Returns [(row, offset)] per item and the tokens used in each row.

    For R = ceil(total / capacity), R + 1, ...: longest-first, each item into the emptiest
    row (LPT scheduling); the first R whose fullest row fits is taken. Ties go to the lower
    index, so the layout is a deterministic function of the batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    for n_rows in range(max(1, -(-sum(lengths) // capacity)), len(lengths) + 1):
        fill = [0] * n_rows
        placement = [None] * len(lengths)
        for i in order:
            row = min(range(n_rows), key=lambda r: (fill[r], r))
            placement[i] = (row, fill[row])
            fill[row] += lengths[i]
        if max(fill) <= capacity:
            return placement, fill
    raise AssertionError("unreachable: one item per row always fits")


def attention_mask(batch: PairBatch, model: nn.Module) -> torch.Tensor | None:
    """The packed layout's 4-D mask [R, 1, L, L]: query q sees key k when both are in one
    segment, k <= q, and not (q rejected and k chosen). Boolean (True = attend) for sdpa and
    flex kernels; additive float (0 / dtype min) for eager attention, which adds it to scores."""
    if batch.segments is None:
        return None
    seg, part = batch.segments, batch.parts
    n = seg.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=seg.device).tril()
    allowed = (seg[:, :, None] == seg[:, None, :]) & causal
    allowed &= ~((part[:, :, None] == REJECTED) & (part[:, None, :] == CHOSEN))
    allowed = allowed[:, None]
    if model.config._attn_implementation == "eager":
        dtype = next(model.parameters()).dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=seg.device).masked_fill(~allowed, torch.finfo(dtype).min)
    return allowed


def _pad(vectors: list[torch.Tensor]) -> torch.Tensor:
    return nn.utils.rnn.pad_sequence([v.float() for v in vectors], batch_first=True)


def _token_logps(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return logits.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def flat_logps(model: nn.Module, batch: PairBatch) -> torch.Tensor:
    """Log-probs [M] of every response token in `batch`, in PairBatch order (float32)."""
    body, head = model.get_decoder(), model.get_output_embeddings()
    hidden = body(input_ids=batch.input_ids, position_ids=batch.position_ids,
                  attention_mask=attention_mask(batch, model), use_cache=False).last_hidden_state
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


@torch.no_grad()
def supports_packing(model: nn.Module) -> bool:
    """Whether `model` computes the packed layout correctly: response log-probs of two short
    pairs packed into one row must equal those of the padded layout. Attention kernels that
    ignore a custom 4-D mask would let tokens see other segments; they fail here."""
    from types import SimpleNamespace

    was_training = model.training
    model.eval()
    vocab = model.config.get_text_config().vocab_size
    ids = lambda *r: [t % vocab for t in range(*r)]  # noqa: E731
    pairs = [SimpleNamespace(id="a", prompt_ids=ids(1, 5), chosen_ids=ids(5, 8), rejected_ids=ids(9, 11)),
             SimpleNamespace(id="b", prompt_ids=ids(12, 14), chosen_ids=ids(14, 15), rejected_ids=ids(3, 7))]
    device = next(model.parameters()).device
    try:
        packed = flat_logps(model, collate_pairs(pairs, 0, pack_to=64).to(device))
        padded = flat_logps(model, collate_pairs(pairs, 0).to(device))
        return bool(torch.allclose(packed.float(), padded.float(), atol=1e-3, rtol=1e-3))
    except (RuntimeError, ValueError, TypeError):   # a kernel that rejects the mask outright
        return False
    finally:
        model.train(was_training)


def split_logps(flat: torch.Tensor, batch: PairBatch):
    """Flat response log-probs -> (chosen [B,Tr], rejected [B,Tr'] | None, chosen_mask, rejected_mask)."""
    b = batch.n_pairs
    out_rows = batch.out_rows
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
        # FSDP's transformer-based auto-wrap reads the layer classes to shard from here.
        self._no_split_modules = getattr(model, "_no_split_modules", None)

    def forward(self, batch: PairBatch) -> torch.Tensor:
        return flat_logps(self.model, batch)

"""Reference per-token log-probs of the training pairs, computed once and cached on disk.

The cache key hashes the reference model (the bytes of every file of a local directory,
or a hub id + revision) and the tokenised data (ids and token ids), so a changed model or
changed data never reuses stale values, and every objective of a suite shares one pass.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from trainers.errors import say
from trainers.logps import collate_pairs, flat_logps, supports_packing
from trainers.models import load_model

CACHE_PREFIX = "ref_logps-"


def model_fingerprint(model_path, revision: str | None = None) -> str:
    """sha256 over a local model directory's files (names and bytes), or of hub id + revision."""
    path = Path(str(model_path))
    h = hashlib.sha256()
    if not path.is_dir():
        h.update(f"hub:{model_path}@{revision or 'main'}".encode())
        return h.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def data_fingerprint(tokenized) -> str:
    h = hashlib.sha256()
    for p in tokenized:
        h.update(json.dumps([p.id, p.prompt_ids, p.chosen_ids, p.rejected_ids]).encode())
    return h.hexdigest()


def cache_key(model_path, tokenized, revision: str | None = None) -> str:
    return hashlib.sha256((model_fingerprint(model_path, revision) + data_fingerprint(tokenized)).encode()).hexdigest()[:32]


def compute_reference(model, tokenized, *, batch_size: int, progress: bool = True, pack_to: int | None = None,
                      forward=None, inference_mode: bool = True) -> dict:
    """Run `model` (frozen) over the pairs: {id: (chosen 1-D float32, rejected 1-D float32 | None)}.

    Pairs are batched in order of length so each batch pads only to its own maximum; with
    `pack_to` (and a model that supports it) each batch is packed into rows of that many tokens.
    `forward` (batch -> flat log-probs) replaces `flat_logps(model, ·)`: the trainer passes
    its distributed wrapper of `model`, whose forward FSDP needs to gather the sharded
    weights; the caller has then checked packing on the unsharded model.
    `inference_mode`: run under torch.inference_mode (no version counters or view tracking:
    cheaper than no_grad, the same bits); False for FSDP, whose all-gather writes in place into
    buffers it keeps, which inference tensors forbid.
    """
    with torch.inference_mode() if inference_mode else torch.no_grad():
        return _compute_reference(model, tokenized, batch_size=batch_size, progress=progress, pack_to=pack_to,
                                  forward=forward)


def _compute_reference(model, tokenized, *, batch_size, progress, pack_to, forward) -> dict:
    if forward is None:
        if pack_to is not None and not supports_packing(model):
            pack_to = None
        forward = lambda batch: flat_logps(model, batch)  # noqa: E731
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    # (length, position) is also the trainer's micro-batch order: equal batches give equal bits.
    order = [p for _, _, p in sorted((sequence_length(p), i, p) for i, p in enumerate(tokenized))]
    out = {}
    with tqdm(total=len(order), desc="reference log-probs", unit="pair", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = collate_pairs(chunk, pad_id, pack_to=pack_to).to(device)
            flat = forward(batch).float().cpu()
            out.update(_per_pair(flat, batch.out_rows.cpu(), chunk))
            bar.update(len(chunk))
    model.train(was_training)
    return out


def sequence_length(p) -> int:
    """Length of the longer of the pair's two sequences (prompt + response)."""
    return len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids or ()))


def _per_pair(flat: torch.Tensor, rows: torch.Tensor, chunk) -> dict:
    per_row = torch.split(flat, torch.bincount(rows, minlength=rows.max() + 1).tolist())
    b = len(chunk)
    return {
        p.id: (per_row[i].clone(), None if p.rejected_ids is None else per_row[b + i].clone())
        for i, p in enumerate(chunk)
    }


def reference_logps(model_path, tokenized, *, batch_size: int, cache_dir, progress: bool = True,
                    revision: str | None = None, device=None, pack_to: int | None = None,
                    trust_remote_code: bool = False) -> dict:
    """Reference log-probs of `tokenized` under the model at `model_path`, cached in `cache_dir`.

    Returns {id: (chosen 1-D float32 tensor, rejected 1-D float32 tensor or None)}. A second call
    with the same model files and data reads the cache and runs no forward.
    """
    cache_file = Path(cache_dir) / f"{CACHE_PREFIX}{cache_key(model_path, tokenized, revision)}.safetensors"
    cached = load_cache(cache_file)
    if cached is not None:
        return cached
    model = load_model(str(model_path), trust_remote_code=trust_remote_code, role="reference", device=device)
    values = compute_reference(model, tokenized, batch_size=batch_size, progress=progress, pack_to=pack_to)
    del model
    save_cache(cache_file, values)
    return values


def save_cache(cache_file: Path, values: dict) -> None:
    """Flat tensors + offsets in one safetensors file, written atomically (tmp then rename)."""
    ids = list(values)
    chosen = [values[i][0] for i in ids]
    rejected = [values[i][1] for i in ids]
    has_rejected = all(r is not None for r in rejected)
    tensors = {"chosen": torch.cat(chosen), "chosen_lens": torch.tensor([len(c) for c in chosen])}
    if has_rejected:
        tensors["rejected"] = torch.cat(rejected)
        tensors["rejected_lens"] = torch.tensor([len(r) for r in rejected])
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(f"{cache_file.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    save_file(tensors, str(tmp), metadata={"ids": json.dumps(ids)})
    os.replace(tmp, cache_file)


def load_cache(cache_file: Path) -> dict | None:
    """The cached values, or None when absent or unreadable (then they are recomputed)."""
    if not Path(cache_file).exists():
        return None
    try:
        with safe_open(str(cache_file), framework="pt") as f:
            ids = json.loads(f.metadata()["ids"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # a truncated or foreign file is a cache miss, not an error
        say(f"reference log-prob cache {cache_file} is damaged ({type(err).__name__}); recomputing it")
        return None
    chosen = torch.split(tensors["chosen"], tensors["chosen_lens"].tolist())
    rejected = (torch.split(tensors["rejected"], tensors["rejected_lens"].tolist())
                if "rejected" in tensors else [None] * len(ids))
    return {i: (c, r) for i, c, r in zip(ids, chosen, rejected)}

"""The one way every stage loads a model or tokenizer: from a local directory or a hub id.

`load_model` is used by every stage that loads weights (policy training, SFT, reference
log-probs, the reward model's training and scoring, the hf generation backend, KL and
drift); it applies the suite's `model.trust_remote_code`, the dtype and the device
(`trainers.devices.placement(role)` unless the caller gives them). `trust_remote_code` is a
required keyword here and in `load_tokenizer`, so no load can silently fall back to
transformers' default. vLLM and lm-eval load through their own libraries, with the same
setting passed in their arguments (`bench.evaluation.generation.vllm_backend`, `bench.evaluation.scoring.lm_eval_scorer`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from trainers.errors import ModelNotFoundError, NetworkRequiredError

Head = Literal["causal_lm", "sequence_classification"]


def resolve_model(name_or_path: str) -> str:
    """Return a loadable local path or hub id; fail in one line when neither can work.

    A string that looks like a path (starts with '.', '/', '~' or exists) must exist.
    A hub id is accepted when it is in the local HF cache or the network is allowed.
    """
    text = str(name_or_path)
    path = Path(os.path.expanduser(text))
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"model path {text} has no config.json (not a Hugging Face model directory)")
        return str(path)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ModelNotFoundError(f"model path {text} does not exist")
    if _hub_offline() and not _in_hub_cache(text):
        raise NetworkRequiredError(
            f"model {text} is a hub id, not in the local cache, and this machine has no network: "
            "download it where there is network, or point the suite at a local directory"
        )
    return text


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return True
    from trainers.net import network_available

    return not network_available()


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an unusual cache layout is the same as not cached
        return False


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(name_or_path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str, *, trust_remote_code: bool, head: Head = "causal_lm", role: str | None = None,
               dtype=None, device=None, **options):
    """The model at `name_or_path` with a language-model head or a sequence-classification
    head (a reward model). dtype and device: the caller's, else `placement(role)`'s, else
    transformers' default dtype on the CPU (training: the Accelerator places it).
    `options` go to `from_pretrained` (e.g. `num_labels=1` for a fresh score head)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if role is not None:
        from trainers.devices import placement

        where = placement(role)
        dtype = where.dtype if dtype is None else dtype
        device = where.device if device is None else device
    auto = {"causal_lm": AutoModelForCausalLM, "sequence_classification": AutoModelForSequenceClassification}[head]
    model = auto.from_pretrained(resolve_model(name_or_path), dtype=dtype, trust_remote_code=trust_remote_code,
                                 **options)
    return model.to(device) if device is not None else model

"""Where every model that a stage loads runs, and in which dtype: one function decides.

`placement(role)` answers for the policy under generation, the reference, the reward model,
KL and drift log-probs and lm-eval: the first CUDA device when there is one (bf16 where the
GPU has it, else fp16 for inference), otherwise the CPU in fp32 (exact, and what CPU
kernels are fast in). Training keeps fp32 master weights and takes its autocast precision
from `training.precision` (trainers.trainer), so it asks only for the device.

`release_memory()` is called between stages: a trained policy is freed before a generation
engine starts, and the CUDA cache is emptied so the next engine (vLLM reserves a fixed
fraction of *free* memory) finds it free.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass

import torch

ROLES = ("generation", "reference", "reward_model", "kl", "drift", "lm_eval", "train")


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype

    @property
    def dtype_name(self) -> str:
        """The dtype as lm-eval and vLLM spell it ("bfloat16", "float16", "float32")."""
        return str(self.dtype).removeprefix("torch.")


def placement(role: str) -> Placement:
    """Device and dtype of a model loaded for `role` (one of ROLES)."""
    if role not in ROLES:
        raise ValueError(f"unknown model role {role!r}; one of {', '.join(ROLES)}")
    if torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
        if role in ("train", "reference"):
            # fp32 master weights, autocast decides the compute dtype; the reference log-probs
            # enter the training loss beside the policy's, so they are computed as exactly.
            return Placement(device, torch.float32)
        return Placement(device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return Placement(torch.device("cpu"), torch.float32)


def settle_memory() -> None:
    """Between two runs: collect, then move every object still alive to gc's permanent generation.

    What survives between runs lives for the whole suite (imported modules, the suite's shared
    data, the cached reward scorer). Frozen, it is no longer scanned by the full collections
    inside the next run (`release_memory`'s and Python's own), which then cost what that run
    created: on the default suite gc took ~1.5 s of CPU per run, nearly all of it full
    collections over ~400k import-time objects. `gc.unfreeze()` at the end of the suite
    (bench.run.runner) hands them back, so nothing frozen outlives the suite.
    """
    gc.collect()
    gc.freeze()


def release_memory() -> None:
    """Collect unreferenced models (they sit in reference cycles) and empty the CUDA cache, so
    the next stage's model or engine finds the memory free."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

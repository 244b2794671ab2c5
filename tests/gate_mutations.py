"""Calibration of the regression gate both ways, on the gate suite (suites/ci_gate.yaml).

- No false alarm: the suite rerun from nothing with torch on 1 thread instead of 2 and
  other generation / reward-model batch sizes (float order changes as on another CPU, the
  SFT reference included) must pass `check` against the committed baseline.
- Power: each mutation below is a realistic bug, applied in-process with pytest's
  MonkeyPatch; the mutated suite must fail `check`, and the entries that caught it are
  recorded.

Stage keys hash configurations, not code, so every mutated run writes into a fresh folder.
The suite-level stages that a mutation does not touch (data, initial model, SFT reference,
reward model) are copied in from the clean run to save their time; the reference log-probs
and every training and evaluation stage are recomputed. A mutation runs only the labels it
concerns (`--only`), and `check` looks only at those labels' entries.

tests/test_gate.py runs them and prints the detection table of suites/baselines/README.md:

    python -m pytest -m slow tests/test_gate.py -s -q
"""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "suites" / "ci_gate.yaml"
BASELINE = REPO / "suites" / "baselines" / "ci_gate.yaml"
SHARED_STAGES = ("data", "init", "sft", "reward")
DPO = "dpo[beta=0.1]"
ADADPO = "adadpo[beta=0.1,clip=2,length_normalize=False]"
# Another CPU, simulated: a different thread count and different batch shapes at evaluation.
CLEAN_VARIANT = dict(threads=1, overrides=("generation.batch_size=8",))


def run_gate(out: Path, *, threads: int | None = None, overrides=(), only=()):
    """Run the gate suite in-process into `out` (torch threads set for the run, then restored)."""
    from bench.run.runner import run_suite

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return run_suite(SUITE, overrides=list(overrides), out_dir=out, only=list(only), progress=False)
    finally:
        torch.set_num_threads(before)


def copy_shared_stages(src: Path, dst: Path) -> None:
    for name in SHARED_STAGES:
        if (src / "stages" / name).is_dir():
            shutil.copytree(src / "stages" / name, dst / "stages" / name)


# --------------------------------------------------------------------------- the mutations

def _sign_error(mp):
    """DPO's margin computed as r_l − r_w: the policy learns to prefer the rejected response."""
    from trainers.objectives import dpo as module

    margin = module._margin
    mp.setattr(module, "_margin", lambda pair: -margin(pair))


def _beta_halved(mp):
    """DPO trains with β/2 (e.g. a default that overrides the suite's value)."""
    from trainers.objectives import base

    objective = base._REGISTRY["dpo"]
    fn = objective.fn
    mp.setitem(base._REGISTRY, "dpo", dataclasses.replace(objective, fn=lambda pair, *, beta, **kw: fn(
        pair, beta=beta / 2, **kw)))


def _wrong_reference(mp):
    """Reference log-probs from the initial model instead of the SFT reference the policy starts from."""
    import trainers.reference as module

    real = module.reference_logps

    def wrong(model_path, *args, **kwargs):
        path = Path(model_path)               # stages/sft/<key>/checkpoint -> stages/init/<key>
        init = path.parents[2] / "init" / path.parent.name
        assert init.is_dir(), init
        return real(str(init), *args, **{**kwargs, "cache_dir": Path(kwargs["cache_dir"]) / "wrong"})

    mp.setattr(module, "reference_logps", wrong)


def _mask_shifted(mp):
    """Response tokens scored one position late: the first response token is out, the token after
    the response's end is in, in training, the reference pass and drift alike."""
    import trainers.logps as module

    finish = module._finish

    def shifted(*args, **kwargs):
        batch = finish(*args, **kwargs)
        pos = batch.src_pos + 1
        labels = batch.input_ids[batch.src_rows, (pos + 1).clamp(max=batch.input_ids.shape[1] - 1)]
        return dataclasses.replace(batch, src_pos=pos, labels=labels)

    mp.setattr(module, "_finish", shifted)


def _swap_20(mp):
    """Chosen and rejected swapped in every fifth training pair (a loader bug on 20% of the data)."""
    import bench.run.prepare as module

    read = module.read_pairs

    def swapped(path):
        pairs = read(path)
        if Path(path).name != "train.jsonl":
            return pairs
        return [dataclasses.replace(p, chosen=p.rejected, rejected=p.chosen) if i % 5 == 0 else p
                for i, p in enumerate(pairs)]

    mp.setattr(module, "read_pairs", swapped)


def _budget_halved(mp):
    """Generation stops at half the suite's max_new_tokens."""
    from bench.evaluation.generation.base import GenerationConfig

    real = GenerationConfig.from_section.__func__

    def halved(cls, section):
        config = real(cls, section)
        return dataclasses.replace(config, max_new_tokens=config.max_new_tokens // 2)

    mp.setattr(GenerationConfig, "from_section", classmethod(halved))


def _adadpo_coefficient_dropped(mp):
    """AdaDPO's ρ dropped (β_w = β): AdaDPO silently trains as DPO."""
    from trainers.objectives import adadpo as module

    mp.setattr(module, "balance_log_ratio", lambda pair, *a, **k: torch.zeros_like(pair.policy_chosen[:, 0]))


@dataclass(frozen=True)
class Mutation:
    name: str
    apply: Callable
    labels: tuple[str, ...]

    @property
    def description(self) -> str:
        return (self.apply.__doc__ or "").strip().splitlines()[0]


MUTATIONS = (
    Mutation("dpo_sign_error", _sign_error, (DPO,)),
    Mutation("beta_halved", _beta_halved, (DPO,)),
    Mutation("reference_from_wrong_model", _wrong_reference, (DPO,)),
    Mutation("response_mask_shifted", _mask_shifted, (DPO,)),
    Mutation("swap_20pct_pairs", _swap_20, (DPO,)),
    Mutation("generation_budget_halved", _budget_halved, (DPO,)),
    Mutation("adadpo_coefficient_dropped", _adadpo_coefficient_dropped, (ADADPO,)),
)


def run_mutation(mutation: Mutation, clean: Path, out: Path, monkeypatch):
    """Run the gate suite with `mutation` applied into `out`; return check's result for its labels."""
    from bench.gate.check import check

    copy_shared_stages(clean, out)
    with monkeypatch.context() as mp:
        mutation.apply(mp)
        run_gate(out, only=mutation.labels)
    return check(out, BASELINE, labels=mutation.labels)


def caught_by(result) -> str:
    """The regressed entries, shortened: 'invariant step-1 loss', 'train_log/loss@11-20 of dpo'..."""
    names = []
    for line in result.regressions:
        head = line.split(":")[0]
        if head.startswith("invariant step-1 loss"):
            head = "invariant step-1 loss"
        elif " (paired by seed)" in head:
            head = head.replace(" (paired by seed)", "")
        if head not in names:
            names.append(head)
    return "; ".join(names)

"""Calibration of the regression gate both ways, on the gate suite (suites/ci_gate.yaml).

- No false alarm: the suite rerun from nothing with torch on 1 thread instead of 2 and
  other generation / reward-model batch sizes (float order changes as on another CPU, the
  SFT reference included) must pass `check` against the committed baseline.
- Power: each mutation below is a realistic bug, applied in-process with pytest's
  MonkeyPatch; the mutated suite must fail `check`, and the entries that caught it are
  recorded.

Stage keys hash configurations, not code, so every mutated run writes into a fresh folder.
The suite-level stages that a mutation does not touch (data, initial model, SFT reference,
reward model) are copied in from the clean run to save their time (a data-split mutation
recomputes the data stage); the reference log-probs and every training and evaluation stage,
the reference policy's included, are recomputed. A mutation runs only the labels it concerns
(`--only`), and `check` looks at those labels' entries, the reference's and the folder's
integrity invariants (invariants.json).

tests/test_gate.py runs them and prints the detection table of suites/baselines/README.md:

    python -m pytest -m slow tests/test_gate.py -s -q
"""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "suites" / "ci_gate.yaml"
BASELINE = REPO / "suites" / "baselines" / "ci_gate.yaml"
SHARED_STAGES = ("data", "init", "sft", "reward")
TRAINED = ("ref_logps", "train")
EVALUATED = (*TRAINED, "evaluate", "chosen")
DPO = "dpo[beta=0.1]"
ADPO1 = "adpo[beta=0.1,granularity=adaptive,m=1]"
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


def copy_shared_stages(src: Path, dst: Path, skip: tuple[str, ...] = (), reuse: tuple[str, ...] = ()) -> None:
    for name in (*SHARED_STAGES, *reuse):
        if name in skip:
            continue
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


def _drift_trained_on(mp):
    """The drift pairs are not removed from the training set (held-out prompts trained on)."""
    import bench.data.splits as module

    real = module.split_pairs

    def leaky(pairs, **kwargs):
        parts = real(pairs, **kwargs)
        return module.Splits(train=parts.train + parts.drift, eval=parts.eval, drift=parts.drift)

    mp.setattr(module, "split_pairs", leaky)


def _same_order_every_seed(mp):
    """Every seed trains on seed 0's data order (the seed never reaches the sampler)."""
    from trainers.data_order import DataOrder

    init = DataOrder.__init__
    mp.setattr(DataOrder, "__init__", lambda self, n, global_batch, seed: init(self, n, global_batch, 0))


def _eos_dropped(mp):
    """Responses tokenised without their closing EOS (the model never learns to stop)."""
    import trainers.tokenize as module

    mp.setattr(module, "_end_with_one_eos", lambda ids, eos: [t for t in ids if t != eos])


def _boundary_off_by_one(mp):
    """The prompt/response boundary one token early: the prompt's last token is scored as response."""
    import trainers.tokenize as module

    real = module._common_prefix
    mp.setattr(module, "_common_prefix", lambda a, b: max(real(a, b) - 1, 0))


def _adpo_rejected_segments(mp):
    """ADPO cuts the rejected response with the chosen response's segment ids (a copy-paste slip)."""
    from trainers.objectives import adpo as module
    from trainers.objectives.base import token_logratios

    def segments(pair, granularity, k, m):
        h_w, h_l = token_logratios(pair)
        pos_w = module.token_positions(pair.chosen_mask)
        len_w = pos_w.max(-1).values + 1
        ids_w = module.adaptive_ids(pos_w, len_w, m) if granularity == "adaptive" else module.static_ids(pos_w, k)
        n = m if granularity == "adaptive" else max(int(ids_w.max()) + 1, 1)
        width = h_l.shape[1]   # rejected tokens past the chosen response's end get id -1: dropped
        ids_l = ids_w[:, :width] if ids_w.shape[1] >= width else \
            torch.nn.functional.pad(ids_w, (0, width - ids_w.shape[1]), value=-1)
        s_w, s_l = module.segment_sums(h_w, ids_w, n), module.segment_sums(h_l, ids_l, n)
        feedback = torch.full_like(len_w, n)
        return s_w, s_l, torch.ones_like(s_w, dtype=torch.bool), feedback

    mp.setattr(module, "_segments", segments)


def _lr_halved(mp):
    """The optimiser starts at half the suite's learning rate (a trainer default overriding it)."""
    import trainers.trainer as module

    real = module.adamw

    def halved(model, cfg, device):
        optimizer = real(model, cfg, device)
        for group in optimizer.param_groups:
            group["lr"] *= 0.5
        return optimizer

    mp.setattr(module, "adamw", halved)


def _lenient_verifier(mp):
    """The arithmetic verifier accepts a response that states the answer anywhere, not as its final answer."""
    from bench.evaluation.scoring import gold

    def lenient(text, metadata):
        return float(str(metadata.get("answer")) in text)

    mp.setitem(gold.VERIFIERS, "arith", lenient)


def _reward_truncated(mp):
    """The reward model scores each response cut to its first 8 characters (a truncation bug)."""
    from bench.evaluation.scoring import reward_model as module

    real = module.score_rewards
    mp.setattr(module, "score_rewards", lambda ctx, pairs, responses: real(ctx, pairs, [r[:8] for r in responses]))


def _drift_sides_swapped(mp):
    """The drift scorer reads chosen and rejected the wrong way round (argument order)."""
    from bench.evaluation.scoring import drift as module

    real = module.drift_arrays
    mp.setattr(module, "drift_arrays", lambda pc, pr, rc, rr, cm, rm: real(pr, pc, rr, rc, rm, cm))


def _ties_as_wins(mp):
    """Win rates count a tie as a win instead of a half (aggregation)."""
    from bench.tables import metrics

    def wins(a, b):
        a, b = metrics._per_prompt(a), metrics._per_prompt(b)
        diff = a[:, :, None] - b[:, None, :]
        return np.where(diff >= 0, 1.0, 0.0).mean(axis=(1, 2))

    mp.setattr(metrics, "prompt_wins", wins)


def _narrow_intervals(mp):
    """Bootstrap intervals at 50% instead of 95% (statistics: a wrong tail in the percentile interval)."""
    from bench.tables import metrics

    def interval(replicates):
        low, high = np.percentile(replicates, [25, 75])
        return float(low), float(high)

    mp.setattr(metrics, "_percentile_interval", interval)


@dataclass(frozen=True)
class Mutation:
    name: str
    apply: Callable
    labels: tuple[str, ...]
    stage: str                              # which stage of the pipeline the bug is in
    recompute: tuple[str, ...] = ()         # shared stages not copied from the clean run
    # Stages before the bug's, copied from the clean run as well (their keys hash configurations,
    # so the mutated run reuses them): a scorer's bug needs no training, an aggregation bug no evaluation.
    reuse: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        return (self.apply.__doc__ or "").strip().splitlines()[0]


MUTATIONS = (
    Mutation("drift_prompts_trained_on", _drift_trained_on, (DPO,), "data split", recompute=("data", "reward")),
    Mutation("swap_20pct_pairs", _swap_20, (DPO,), "data loading"),
    Mutation("eos_dropped", _eos_dropped, (DPO,), "tokenisation"),
    Mutation("prompt_boundary_off_by_one", _boundary_off_by_one, (DPO,), "tokenisation"),
    Mutation("dpo_sign_error", _sign_error, (DPO,), "objective: DPO"),
    Mutation("beta_halved", _beta_halved, (DPO,), "objective: DPO"),
    Mutation("adpo_rejected_uses_chosen_segments", _adpo_rejected_segments, (ADPO1, DPO), "objective: ADPO"),
    Mutation("adadpo_coefficient_dropped", _adadpo_coefficient_dropped, (ADADPO,), "objective: AdaDPO"),
    Mutation("reference_from_wrong_model", _wrong_reference, (DPO,), "reference pass"),
    Mutation("response_mask_shifted", _mask_shifted, (DPO,), "log-probs"),
    Mutation("same_data_order_every_seed", _same_order_every_seed, (DPO,), "trainer"),
    Mutation("learning_rate_halved", _lr_halved, (DPO,), "trainer"),
    Mutation("generation_budget_halved", _budget_halved, (DPO,), "generation", reuse=TRAINED),
    Mutation("gold_verifier_lenient", _lenient_verifier, (DPO,), "scorer: gold", reuse=TRAINED),
    Mutation("reward_model_truncates_responses", _reward_truncated, (DPO,), "scorer: reward model", reuse=TRAINED),
    Mutation("drift_sides_swapped", _drift_sides_swapped, (DPO,), "scorer: drift", reuse=TRAINED),
    Mutation("ties_counted_as_wins", _ties_as_wins, (DPO,), "aggregation", reuse=EVALUATED),
    Mutation("bootstrap_interval_50pct", _narrow_intervals, (DPO,), "statistics", reuse=EVALUATED),
)


def run_mutation(mutation: Mutation, clean: Path, out: Path, monkeypatch):
    """Run the gate suite with `mutation` applied into `out`; return check's result for its labels."""
    from bench.gate.check import check

    copy_shared_stages(clean, out, skip=mutation.recompute, reuse=mutation.reuse)
    with monkeypatch.context() as mp:
        mutation.apply(mp)
        run_gate(out, only=mutation.labels)
    # the reference policy is evaluated again in every mutated folder: its entries are checked too
    return check(out, BASELINE, labels=(*mutation.labels, "reference"))


def caught_by(result) -> str:
    """The regressed entries, shortened: 'invariant step-1 loss', 'train_log/loss@11-20 of dpo'..."""
    names = []
    for line in result.regressions:
        head = line.split(":")[0]
        if head.startswith("invariant step-1 loss"):
            head = "invariant step-1 loss"
        elif head.startswith("invariant step-1 closed form"):
            head = "invariant step-1 closed form"
        elif " (paired by seed)" in head:
            head = head.replace(" (paired by seed)", "")
        if head not in names:
            names.append(head)
    return "; ".join(names)


def _short(caught: str, keep: int = 5) -> str:
    """The entries that caught a bug, the exact invariants and suspicious jumps first, at most `keep`."""
    names = [n.strip() for n in caught.split(";") if n.strip()]
    names.sort(key=lambda n: (not n.startswith(("invariant", "SUSPICIOUS")), n.startswith("invariant integrity")))
    return "; ".join(names[:keep]) + (f"; +{len(names) - keep} more" if len(names) > keep else "")


def detection_table(rows: dict[str, dict]) -> str:
    """The README's detection table from rows {name: {ok, regressed, checked, caught_by}}."""
    clean = rows["clean"]
    lines = [f"clean rerun (torch 1 thread, generation batch 8): {'passes' if clean['ok'] else 'FAILS'} "
             f"({clean['regressed']} of {clean['checked']} entries regressed)", "",
             "| stage | mutation | what it does | caught | regressed entries | caught by |",
             "|---|---|---|---|---|---|"]
    for m in MUTATIONS:
        row = rows.get(m.name)
        if row is None:   # a shard that did not get to it
            lines.append(f"| {m.stage} | `{m.name}` | {m.description} | not measured | – | – |")
            continue
        lines.append(f"| {m.stage} | `{m.name}` | {m.description} | {'yes' if not row['ok'] else '**no**'} | "
                     f"{row['regressed']} of {row['checked']} | {_short(row['caught_by']) or '–'} |")
    return "\n".join(lines)


if __name__ == "__main__":   # python -m tests.gate_mutations ROWS.jsonl...: the table of sharded runs
    import json
    import sys

    found = {}
    for path in sys.argv[1:]:
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            found[row.pop("name")] = row
    print(detection_table(found))

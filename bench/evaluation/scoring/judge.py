"""An LLM as pairwise judge: each policy's sample against the reference policy's sample for the
same prompt (and, asked for, against the dataset's chosen response), shown to the judge in
both orders.

- Templates (`judge_templates/*.yaml`, in the repository): Arena-Hard-Auto's prompt (default;
  verdicts [[A>>B]]...[[B>>A]]), AlpacaEval 2's (the completion is `m` or `M`) and MT-Bench's
  pair-v2 ([[A]]/[[B]]/[[C]]); or a YAML file of one's own with the same fields. Each run
  records the template's sha256 (`fingerprint`).
- Verdict parsing follows Arena-Hard's `get_score`: the one distinct label the pattern finds;
  none, or two different ones, is *unparseable* (counted, never fatal).
- Both orders, always, and a disagreement is a tie: MT-Bench's rule (Zheng et al. 2023,
  arXiv:2306.05685, §3.4, "conservative" swap). An unparseable order makes the comparison a
  tie too. So a judge that only ever prefers position A gives every comparison a tie:
  position bias cancels exactly rather than on average.
- The outcome per comparison (1 win, ½ tie, 0 loss) is the unit of `win_rate_vs_reference`
  and the soft label of the length-controlled GLM (bench.tables.metrics).

The stage (bench.run.pipeline.judge_runs) runs in the command's own process after every
evaluation: judging is waiting on HTTP, and it needs the reference's samples and each
policy's. Answers go to the judgment cache (bench.evaluation.judge_cache) as they arrive.
"""
from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from bench.errors import BenchError
from bench.evaluation.judge_cache import CACHE_FILE, JudgmentCache, judgment_key
from bench.evaluation.scoring.registry import register_scorer
from bench.tables.aggregate import JUDGE_FILE, JUDGE_INFO   # per comparison: verdicts, raw answers, tokens

TEMPLATES_DIR = Path(__file__).with_name("judge_templates")
PLACEHOLDERS = ("prompt", "answer_a", "answer_b")
ORDERS = ("policy_first", "policy_second")   # the policy's sample shown as A, then as B
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


# ---------------------------------------------------------------- templates
@dataclass(frozen=True)
class Template:
    name: str
    reference: str
    system: str
    user: str
    pattern: re.Pattern
    verdicts: dict           # label -> A's preference over B (positive: A better; 0: tie)
    max_tokens: int
    fingerprint: str         # sha256 of the template file
    logprobs: bool = False   # ask for the first token's log-probs (a one-token verdict, AlpacaEval 2)

    def messages(self, prompt: str, answer_a: str, answer_b: str) -> list[dict]:
        # One pass over the template: a response that itself contains "{answer_b}" stays text.
        values = {"prompt": prompt, "answer_a": answer_a, "answer_b": answer_b}
        user = _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.user)
        return ([{"role": "system", "content": self.system}] if self.system else []) + \
            [{"role": "user", "content": user}]

    def parse(self, text: str) -> tuple[str | None, int | None]:
        """(label, A's preference) of a judge's answer; (None, None) when unparseable."""
        found = {m.strip() for m in self.pattern.findall(text or "") if m.strip() in self.verdicts}
        if len(found) != 1:
            return None, None
        label = found.pop()
        return label, int(self.verdicts[label])

    def prob_a(self, top_logprobs: dict | None) -> float | None:
        """P(A better) from the first token's log-probs, as AlpacaEval's `logprob_parser`:
        the mass of the labels preferring A over that of every decisive label (None without them)."""
        if not top_logprobs:
            return None
        mass = {1: 0.0, -1: 0.0}
        for token, logprob in top_logprobs.items():
            value = self.verdicts.get(str(token).strip())
            if value:
                mass[1 if value > 0 else -1] += math.exp(logprob)
        total = mass[1] + mass[-1]
        return mass[1] / total if total > 0 else None


def template_names() -> list[str]:
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.yaml"))


def load_template(spec: str, base_dir: Path | None = None) -> Template:
    """A template by name (judge_templates/NAME.yaml) or by path (relative paths: to `base_dir`,
    the suite's folder, then the working directory). Bad templates: one line naming the setting."""
    where = "scoring.judge.template"
    path = TEMPLATES_DIR / f"{spec}.yaml"
    if not path.is_file():
        candidates = [Path(spec)] if Path(spec).is_absolute() else \
            [p for p in ((base_dir / spec) if base_dir else None, Path(spec)) if p is not None]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise BenchError(f"{where}: {spec!r} is neither a template ({', '.join(template_names())}) nor a file")
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise BenchError(f"{where}: {path} is not YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise BenchError(f"{where}: {path} is not a mapping of template fields")
    missing = [k for k in ("user", "verdict_pattern", "verdicts") if not data.get(k)]
    if missing:
        raise BenchError(f"{where}: {path} lacks {', '.join(missing)}")
    absent = [f"{{{p}}}" for p in PLACEHOLDERS if f"{{{p}}}" not in str(data["user"])]
    if absent:
        raise BenchError(f"{where}: {path}'s user prompt lacks the placeholder(s) {', '.join(absent)}")
    try:
        pattern = re.compile(str(data["verdict_pattern"]))
    except re.error as err:
        raise BenchError(f"{where}: {path}'s verdict_pattern is not a regular expression ({err})") from None
    if pattern.groups != 1:
        raise BenchError(f"{where}: {path}'s verdict_pattern must have exactly one group (the label)")
    verdicts = data["verdicts"]
    if not isinstance(verdicts, dict) or not all(isinstance(v, int) for v in verdicts.values()):
        raise BenchError(f"{where}: {path}'s verdicts must map each label to A's preference (an integer)")
    return Template(name=str(data.get("name") or path.stem), reference=str(data.get("reference") or ""),
                    system=str(data.get("system") or ""), user=str(data["user"]), pattern=pattern,
                    verdicts={str(k): int(v) for k, v in verdicts.items()},
                    max_tokens=int(data.get("max_tokens") or 1024), fingerprint=hashlib.sha256(raw).hexdigest(),
                    logprobs=bool(data.get("logprobs", False)))


# ---------------------------------------------------------------- both orders -> one outcome
def outcome(pref_first: float | None, pref_second: float | None) -> float:
    """The policy's outcome from its preference in each order (positive: the policy preferred):
    1 when both orders prefer it, 0 when both prefer the other, else ½ (a disagreement, a tie in
    either order, or an unparseable order)."""
    if pref_first is None or pref_second is None or _nan(pref_first) or _nan(pref_second):
        return 0.5
    first, second = _sign(pref_first), _sign(pref_second)
    if first == second and first != 0:
        return 1.0 if first > 0 else 0.0
    return 0.5


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


@dataclass(frozen=True)
class Comparison:
    """One policy sample against one other text (the reference's sample, or the chosen response)."""

    prompt_id: str
    sample_index: int
    against: str           # "reference" | "chosen"
    prompt: str
    policy: str
    other: str
    policy_tokens: int
    other_tokens: int


# ---------------------------------------------------------------- the judge
class Judge:
    """Judges comparisons in both orders through a client (bench.evaluation.judge_client),
    answers first from the cache, new answers into it as they arrive."""

    def __init__(self, config, template: Template, cache: JudgmentCache, client=None):
        self.config, self.template, self.cache, self.client = config, template, cache, client
        self.max_tokens = int(config.max_tokens or template.max_tokens)

    def fingerprint(self) -> dict:
        """What the judgments depend on (the stage key; written beside them)."""
        return {"model": self.config.model, "template": self.template.name,
                "template_sha256": self.template.fingerprint, "temperature": self.config.temperature,
                "max_tokens": self.max_tokens}

    def calls(self, item: Comparison) -> list[tuple[str, list[dict]]]:
        """(cache key, messages) of the two orders of one comparison."""
        out = []
        for a, b in ((item.policy, item.other), (item.other, item.policy)):
            key = judgment_key(model=self.config.model, template=self.template.fingerprint,
                               temperature=self.config.temperature, max_tokens=self.max_tokens,
                               prompt=item.prompt, text_a=a, text_b=b)
            out.append((key, self.template.messages(item.prompt, a, b)))
        return out

    def missing(self, items: list[Comparison]) -> list[tuple[str, list[dict]]]:
        seen, out = set(), []
        for item in items:
            for key, messages in self.calls(item):
                if key not in seen and self.cache.get(key) is None:
                    seen.add(key)
                    out.append((key, messages))
        return out

    def fill(self, calls: list[tuple[str, list[dict]]], progress=None) -> None:
        """Ask the judge for every call not in the cache, `max_concurrency` at a time, storing each
        answer when it arrives. The first JudgeUnavailable or BudgetSpent stops the sending
        (requests in flight still land in the cache) and is raised; so is Ctrl-C."""
        if not calls:
            return
        # One request per cache key: policies that give the reference's answer (a zero-effect
        # control, or many policies on a short prompt) share a comparison, and sending each copy
        # spent ~10x the requests on the default suite (20,000 requests for 1,962 judgments).
        calls = list(dict(calls).items())
        stop = threading.Event()

        def one(key: str, messages: list[dict]) -> None:
            if stop.is_set():
                return
            answer = self.client.complete(messages, max_tokens=self.max_tokens, logprobs=self.template.logprobs)
            self.cache.put(key, {"text": answer.text, "prompt_tokens": answer.prompt_tokens,
                                 "completion_tokens": answer.completion_tokens, "top_logprobs": answer.top_logprobs})

        pool = futures.ThreadPoolExecutor(max_workers=self.config.max_concurrency, thread_name_prefix="judge")
        first_error = None
        try:
            pending = [pool.submit(one, key, messages) for key, messages in calls]
            for done in futures.as_completed(pending):
                if done.cancelled():
                    continue
                err = done.exception()
                if err is not None and first_error is None:
                    first_error = err
                    stop.set()
                    for f in pending:
                        f.cancel()
                elif err is None and progress is not None:
                    progress()
        except BaseException:   # Ctrl-C: send nothing more; what arrived is in the cache already
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if first_error is not None:
            raise first_error

    def table(self, items: list[Comparison]) -> pd.DataFrame:
        """One row per comparison from the cache (every answer must be there)."""
        rows = []
        for item in items:
            row = {"prompt_id": item.prompt_id, "sample_index": item.sample_index, "against": item.against,
                   "policy_tokens": item.policy_tokens, "other_tokens": item.other_tokens}
            prefs, probs = [], []
            for order, (key, _) in zip(ORDERS, self.calls(item)):
                answer = self.cache.get(key)
                if answer is None:
                    raise KeyError(f"no stored judgment for {item.prompt_id}/{item.sample_index} ({order})")
                label, pref = self.template.parse(answer["text"])
                # The policy's preference: A's in the first order, B's (minus A's) in the second.
                pref = None if pref is None else (pref if order == "policy_first" else -pref)
                prefs.append(pref)
                row[f"verdict_{order}"] = label or ""
                row[f"pref_{order}"] = float("nan") if pref is None else float(pref)
                row[f"raw_{order}"] = answer["text"]
                row[f"tokens_{order}"] = int(answer.get("prompt_tokens", 0)) + int(answer.get("completion_tokens", 0))
                prob = self.template.prob_a(answer.get("top_logprobs"))   # the policy's probability
                probs.append(None if prob is None else (prob if order == "policy_first" else 1.0 - prob))
                row[f"prob_{order}"] = float("nan") if probs[-1] is None else probs[-1]
            row["outcome"] = outcome(*prefs)
            # The soft label of the LC fit: with log-probs (AlpacaEval 2) the policy's probability
            # averaged over both orders (a balanced position calibration, Wang et al. 2023,
            # arXiv:2305.17926), else the outcome itself.
            row["soft_outcome"] = sum(probs) / 2 if None not in probs else row["outcome"]
            row["tie"] = row["outcome"] == 0.5
            row["unparseable"] = sum(p is None for p in prefs)
            # Position consistency: both orders parsed and name the same winner (or both a tie).
            row["consistent"] = all(p is not None for p in prefs) and _sign(prefs[0]) == _sign(prefs[1])
            rows.append(row)
        return pd.DataFrame(rows)


# ---------------------------------------------------------------- the stage's inputs
def comparisons(pairs: list, policy_gens: list, reference_gens: list, against: list[str], tokenizer) -> list[Comparison]:
    """The comparisons of one policy: its sample i of each prompt against the reference's sample i
    (same prompt, same sampling settings), and against the chosen response when asked for."""
    by_id = {pair.id: pair for pair in pairs}
    reference = {(g.prompt_id, g.sample_index): g for g in reference_gens}
    out = []
    for g in sorted(policy_gens, key=lambda g: (g.prompt_id, g.sample_index)):
        pair = by_id.get(g.prompt_id)
        if pair is None:
            continue
        if "reference" in against and (g.prompt_id, g.sample_index) in reference:
            ref = reference[(g.prompt_id, g.sample_index)]
            out.append(Comparison(g.prompt_id, g.sample_index, "reference", pair.prompt, g.text, ref.text,
                                  g.num_tokens, ref.num_tokens))
        if "chosen" in against:
            chosen_tokens = len(tokenizer(pair.chosen, add_special_tokens=False).input_ids)
            out.append(Comparison(g.prompt_id, g.sample_index, "chosen", pair.prompt, g.text, pair.chosen,
                                  g.num_tokens, chosen_tokens))
    return out


@dataclass
class JudgeOutcome:
    """What the judge stage did: each policy evaluation folder's judge folder (those judged
    completely), how many requests it sent, and why it stopped early (None when it did not)."""

    stage_dirs: dict
    requests: int = 0
    failure: str | None = None


@register_scorer("judge", kind="pairwise", order=50, on_reference=False,
                 enabled=lambda ctx: getattr(ctx, "judge", None) is not None,
                 metrics=("win_rate_vs_reference", "lc_win_rate_vs_reference", "tie_rate", "unparseable_rate",
                          "win_rate_vs_chosen"),
                 reference="Zheng et al. 2023 (arXiv:2306.05685); Li et al. 2024, Arena-Hard (arXiv:2406.11939); "
                           "Dubois et al. 2024, Length-Controlled AlpacaEval (arXiv:2404.04475)")
def judge_policies(ctx, store, reference_eval: Path, policy_evals: list[Path], *, suite_dir: Path | None = None,
                   client=None, progress=None) -> JudgeOutcome:
    """Judge every policy evaluation folder against the reference's; each fully judged policy gets
    a stage folder `stages/judge/<key>` with JUDGE_FILE and JUDGE_INFO. A judge that stops
    (dead server, budget spent) fails this stage alone: the answers received are in the cache
    and the policies judged completely keep their folders."""
    from bench.evaluation.generation.base import read_generations
    from bench.evaluation.judge_client import JudgeClient, api_key
    from bench.hashing import content_hash

    config = ctx.judge
    template = load_template(config.template, suite_dir)
    cache = JudgmentCache(store.root / "judge" / CACHE_FILE)
    try:
        if client is None:
            key = api_key(config)
            if key is None:
                raise BenchError(f"scoring.judge.api_key_env: {config.api_key_env!r} is not set")
            client = JudgeClient(config, key=key)
        judge = Judge(config, template, cache, client)
        fingerprint = {**judge.fingerprint(), "against": sorted(config.against)}
        reference_gens = read_generations(reference_eval / "generations.jsonl")
        todo, outcome_ = [], JudgeOutcome(stage_dirs={})
        for policy_eval in policy_evals:
            key = content_hash("judge", Path(policy_eval).name, Path(reference_eval).name, fingerprint,
                               ctx.judge_code)   # the judge's own code: not in the evaluations' keys
            if store.is_done("judge", key):
                outcome_.stage_dirs[policy_eval] = store.run("judge", key, None)
                continue
            items = comparisons(ctx.eval_pairs, read_generations(Path(policy_eval) / "generations.jsonl"),
                                reference_gens, config.against, ctx.tokenizer)
            todo.append((policy_eval, key, items))
        try:   # every policy's missing calls in one pool, policy after policy (a stop leaves whole policies)
            judge.fill([call for _, _, items in todo for call in judge.missing(items)], progress=progress)
        except BenchError as err:
            outcome_.failure = str(err)
        for policy_eval, key, items in todo:
            if judge.missing(items):
                continue
            info = {**fingerprint, "reference": template.reference, "comparisons": len(items)}

            def build(tmp: Path, items=items, info=info) -> dict:
                judge.table(items).to_parquet(tmp / JUDGE_FILE, index=False)
                (tmp / JUDGE_INFO).write_text(json.dumps(info, sort_keys=True, indent=1))
                return {"judge": info}

            outcome_.stage_dirs[policy_eval] = store.run("judge", key, build)
        outcome_.requests = getattr(client, "requests", 0)
        if outcome_.failure:
            left = len(policy_evals) - len(outcome_.stage_dirs)
            outcome_.failure += (f"; {left} of {len(policy_evals)} policies not judged, {len(cache)} judgments "
                                 "stored (a rerun asks only for the rest)")
        return outcome_
    finally:
        cache.close()

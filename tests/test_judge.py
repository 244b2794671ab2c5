"""The LLM judge (bench.evaluation.scoring.judge) against a real HTTP server on 127.0.0.1: the
stand-in judge of tests/judge_server.py, position-biased, verbosity-biased, rate-limiting,
garbage-returning or dying as each test needs."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.evaluation.generation.base import Generation, write_generations
from bench.evaluation.judge_cache import JudgmentCache
from bench.evaluation.judge_client import BudgetSpent, JudgeClient, JudgeUnavailable
from bench.evaluation.scoring.judge import Comparison, Judge, judge_policies, load_template, outcome
from bench.suite.schema import JudgeConfig
from bench.tables.aggregate import judge_rows
from tests.judge_server import StandInJudge

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "PREFBENCH_TEST_JUDGE_KEY"


@pytest.fixture
def serve():
    servers = []

    def start(**kwargs) -> StandInJudge:
        servers.append(StandInJudge(**kwargs).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def config(server: StandInJudge, **kw) -> JudgeConfig:
    return JudgeConfig(base_url=server.base_url, model=server.model, api_key_env=KEY_ENV, **kw)


def make_judge(server, tmp_path, *, cache_name="cache.sqlite", template="arena_hard", **kw) -> Judge:
    cfg = config(server, **kw)
    return Judge(cfg, load_template(template), JudgmentCache(tmp_path / cache_name),
                 JudgeClient(cfg, key="EMPTY", backoff_s=0.01))


def items_with_lengths(n: int, seed: int = 0, gap=(-10, 30)) -> list[Comparison]:
    """n comparisons whose texts differ only in length (policy mostly the longer one)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lp = rng.randint(5, 60)
        lr = max(1, lp - rng.randint(*gap))
        out.append(Comparison(f"p{i:03d}", 0, "reference", f"question {i}", "x" * lp, "y" * lr, lp, lr))
    return out


# ---------------------------------------------------------------- hand-worked rules
def test_both_orders_rule_by_hand():
    # policy preference in order 1 (policy shown as A), order 2 (policy shown as B)
    assert outcome(1, 1) == 1.0 and outcome(2, 1) == 1.0     # both orders prefer the policy: a win
    assert outcome(-1, -2) == 0.0                             # both prefer the other: a loss
    assert outcome(1, -1) == 0.5                              # a disagreement (position bias): a tie
    assert outcome(0, 1) == 0.5 and outcome(None, 1) == 0.5   # a tie, or an unparseable order: a tie


def test_verdict_parsing_by_hand():
    arena, mt, alpaca = load_template("arena_hard"), load_template("mt_bench"), load_template("alpaca_eval")
    assert arena.parse("thinking... My final verdict is: [[B>>A]]") == ("B>>A", -2)
    assert arena.parse("[[A>B]] and again [[A>B]]") == ("A>B", 1)       # one distinct label
    assert arena.parse("[[A>B]] no wait [[B>A]]") == (None, None)       # two different: unparseable
    assert arena.parse("no verdict") == (None, None)
    assert mt.parse("explanation [[C]]") == ("C", 0)
    assert (alpaca.parse("m"), alpaca.parse(" M\n"), alpaca.parse("maybe m")) == (("m", 1), ("M", -1), (None, None))
    # The three placeholders filled in one pass: a response quoting "{answer_b}" stays text.
    user = arena.messages("Q?", "says {answer_b}", "B!")[-1]["content"]
    assert "says {answer_b}" in user and "B!" in user and "{prompt}" not in user
    assert len({t.fingerprint for t in (arena, mt, alpaca)}) == 3


def test_template_missing_a_placeholder_is_one_line(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("user: 'Q: {prompt} A: {answer_a}'\nverdict_pattern: '\\[\\[(A|B)\\]\\]'\nverdicts: {A: 1, B: -1}\n")
    with pytest.raises(BenchError, match=r"scoring.judge.template: .*lacks the placeholder\(s\) \{answer_b\}"):
        load_template(str(bad))


# ---------------------------------------------------------------- against the stand-in server
def test_both_orders_cancel_a_pure_position_bias_exactly(serve, tmp_path):
    server = serve(prefer="first")   # always "A is better", whatever A is
    judge = make_judge(server, tmp_path)
    items = items_with_lengths(20)
    judge.fill(judge.missing(items))
    table = judge.table(items)
    assert server.answered == 40
    assert (table["outcome"] == 0.5).all() and table["tie"].all() and not table["consistent"].any()
    rows = {metric: est for _, metric, est in judge_rows(table, n_boot=50, seed=0)}
    assert rows["win_rate_vs_reference"].value == 0.5 and rows["tie_rate"].value == 1.0


def test_length_control_removes_a_pure_length_preference(serve, tmp_path):
    # A judge that looks only at length (noisy): the policy is mostly longer, so it "wins" often;
    # at equal length it would win half the time, which is what the LC win rate must say.
    server = serve(prefer="longer_soft")
    judge = make_judge(server, tmp_path)
    items = items_with_lengths(200)
    judge.fill(judge.missing(items))
    rows = {metric: est for _, metric, est in judge_rows(judge.table(items), n_boot=200, seed=0)}
    raw, lc = rows["win_rate_vs_reference"], rows["lc_win_rate_vs_reference"]
    assert raw.value > 0.6 and raw.ci_low > 0.55
    assert abs(lc.value - 0.5) < 0.03 and lc.ci_low < 0.5 < lc.ci_high


def test_retries_on_429_lose_nothing(serve, tmp_path):
    items = items_with_lengths(30)
    limited = serve(prefer="longer", rate_limit_every=3)       # every third request: 429, Retry-After
    # One request at a time: every 429 is then followed by an answered retry. With several in
    # flight one call can keep drawing the 429 slot until its retries run out (seen once in CI
    # under load), which would test the scheduling, not the retry.
    judge = make_judge(limited, tmp_path, cache_name="a.sqlite", max_concurrency=1)
    judge.fill(judge.missing(items))
    plain = serve(prefer="longer")
    other = make_judge(plain, tmp_path, cache_name="b.sqlite")
    other.fill(other.missing(items))
    assert judge.client.retried > 0 and limited.requests > limited.answered == 60
    cols = ["prompt_id", "verdict_policy_first", "verdict_policy_second", "outcome"]
    assert judge.table(items)[cols].equals(other.table(items)[cols])


def test_garbage_is_counted_not_crashed_on(serve, tmp_path):
    server = serve(prefer="longer", garbage_every=4)   # every fourth answer has no verdict
    judge = make_judge(server, tmp_path)
    items = items_with_lengths(25)
    judge.fill(judge.missing(items))
    table = judge.table(items)
    garbage = server.requests // 4
    assert garbage > 0 and int(table["unparseable"].sum()) == garbage
    assert (table.loc[table["unparseable"] > 0, "outcome"] == 0.5).all()
    rows = {metric: est for _, metric, est in judge_rows(table, n_boot=50, seed=0)}
    assert rows["unparseable_rate"].value == pytest.approx(garbage / 50)


def test_cache_a_rerun_asks_only_for_what_is_new(serve, tmp_path):
    server = serve(prefer="longer")
    items = items_with_lengths(10)
    first = make_judge(server, tmp_path)
    first.fill(first.missing(items))
    assert server.requests == 20
    again = make_judge(server, tmp_path)          # same cache file, a new process's view of it
    new = items + [Comparison("p999", 0, "reference", "question new", "zz", "y", 2, 1)]
    assert len(again.missing(new)) == 2           # the new comparison, both orders
    again.fill(again.missing(new))
    assert server.requests == 22
    assert again.table(new)["outcome"].iloc[-1] == 1.0


def test_identical_comparisons_of_several_policies_are_sent_once(serve, tmp_path):
    """Mutation seen failing: the de-duplication of calls in Judge.fill removed (40 requests, not 20)."""
    server = serve(prefer="longer")
    judge = make_judge(server, tmp_path)
    items = items_with_lengths(10)
    judge.fill(judge.missing(items) + judge.missing(items))   # two policies with the same answers
    assert server.requests == 20 and len(judge.table(items)) == 10


def test_a_dying_server_keeps_every_stored_judgment(serve, tmp_path):
    items = items_with_lengths(15)
    dying = serve(prefer="longer", fail_after=10)               # then 503 for ever
    judge = make_judge(dying, tmp_path, max_retries=1, max_concurrency=1)
    with pytest.raises(JudgeUnavailable, match="HTTP 503, 2 attempts"):
        judge.fill(judge.missing(items))
    assert len(judge.cache) == 10
    healthy = serve(prefer="longer")
    resumed = make_judge(healthy, tmp_path)
    resumed.fill(resumed.missing(items))
    assert healthy.requests == 30 - 10 and len(resumed.table(items)) == 15


def test_the_request_budget_stops_cleanly(serve, tmp_path):
    server = serve(prefer="longer")
    judge = make_judge(server, tmp_path, max_requests=7, max_concurrency=3)
    items = items_with_lengths(10)
    with pytest.raises(BudgetSpent, match="max_requests: the budget of 7 requests is spent"):
        judge.fill(judge.missing(items))
    assert server.requests == 7 and len(judge.cache) == 7


# ---------------------------------------------------------------- the stage
class _Pair:
    def __init__(self, i):
        self.id, self.prompt, self.chosen = f"p{i}", f"question {i}", "c" * (i + 3)


def _eval_dir(root: Path, name: str, lengths: list[int]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    write_generations(folder / "generations.jsonl",
                      [Generation(f"p{i}", 0, "w" * n, n, "stop") for i, n in enumerate(lengths)])
    return folder


def test_stage_judges_policies_and_stops_alone(serve, tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    from bench.run.store import StageStore
    from bench.tables.aggregate import JUDGE_FILE, judge_units

    server = serve(prefer="longer", fail_after=2 * 6 + 2)      # enough for one policy, then 503
    store = StageStore(tmp_path / "out")
    ref = _eval_dir(tmp_path, "ref", [5, 5, 5, 5, 5, 5])
    longer, shorter = _eval_dir(tmp_path, "pol1", [9, 9, 9, 1, 9, 9]), _eval_dir(tmp_path, "pol2", [1, 1, 1, 1, 9, 1])
    ctx = SimpleNamespace(judge=config(server, max_retries=0, max_concurrency=1), eval_pairs=[_Pair(i) for i in range(6)],
                          tokenizer=None, judge_code="original")
    client = JudgeClient(ctx.judge, key="EMPTY", backoff_s=0.01)
    result = judge_policies(ctx, store, ref, [longer, shorter], client=client)
    assert list(result.stage_dirs) == [longer] and "1 of 2 policies not judged" in result.failure
    units = judge_units(pd.read_parquet(result.stage_dirs[longer] / JUDGE_FILE))
    assert units[("judge", "win_rate_vs_reference")].tolist() == [1, 1, 1, 0, 1, 1]
    info = json.loads((result.stage_dirs[longer] / "judge_info.json").read_text())
    assert info["template"] == "arena_hard" and len(info["template_sha256"]) == 64
    # A rerun against a live judge: the first policy's stage reused, the second judged.
    healthy = serve(prefer="longer")
    ctx.judge = config(healthy)
    again = judge_policies(ctx, store, ref, [longer, shorter], client=JudgeClient(ctx.judge, key="EMPTY"))
    assert again.failure is None and set(again.stage_dirs) == {longer, shorter}
    # Asked again: neither what the dying judge answered (2 calls of pol2) nor pol2's prompts 3 and 4,
    # whose texts are pol1's (the cache is keyed by texts, not by policy): 2 x 4 prompts - 2.
    assert healthy.requests == 6
    # New judge code (its digest is in the stage's key): judged anew, every answer from the cache.
    ctx.judge_code = "edited"
    third = judge_policies(ctx, store, ref, [longer, shorter], client=JudgeClient(ctx.judge, key="EMPTY"))
    assert set(third.stage_dirs) == {longer, shorter} and third.stage_dirs[longer] != again.stage_dirs[longer]
    assert healthy.requests == 6


# ---------------------------------------------------------------- validate
def _suite(*sets):
    from bench.suite.load import load_suite

    return load_suite(REPO / "suites" / "ci_smoke.yaml", list(sets))


def test_validate_names_each_bad_judge_setting(serve, tmp_path, monkeypatch):
    from bench.suite.validate import check_judge

    server = serve()
    monkeypatch.setenv(KEY_ENV, "EMPTY")
    base = [f"scoring.judge.api_key_env={KEY_ENV}"]
    ok = _suite(*base, f"scoring.judge.base_url={server.base_url}", f"scoring.judge.model={server.model}")
    assert "answered a probe request" in check_judge(ok)
    cases = {
        "scoring.judge.base_url: required": [f"scoring.judge.model={server.model}"],
        "scoring.judge.base_url: cannot reach http://127.0.0.1:9/v1": ["scoring.judge.base_url=http://127.0.0.1:9/v1",
                                                                       "scoring.judge.model=m"],
        "scoring.judge.model: .* does not serve 'gpt-9'; it serves: stand-in-judge": [
            f"scoring.judge.base_url={server.base_url}", "scoring.judge.model=gpt-9"],
    }
    bad = tmp_path / "t.yaml"
    bad.write_text("user: '{prompt} {answer_a}'\nverdict_pattern: '(A)'\nverdicts: {A: 1}\n")
    cases["lacks the placeholder"] = [f"scoring.judge.base_url={server.base_url}", f"scoring.judge.model={server.model}",
                                      f"scoring.judge.template={bad}"]
    for message, sets in cases.items():
        with pytest.raises(BenchError, match=message) as err:
            check_judge(_suite(*base, *sets))
        assert "\n" not in str(err.value)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(BenchError, match=f"scoring.judge.api_key_env: the environment variable '{KEY_ENV}' is not set"):
        check_judge(ok)


def test_validate_cli_unreachable_judge_is_one_line_exit_2():
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "HF_HUB_OFFLINE": "1", KEY_ENV: "EMPTY"}
    proc = subprocess.run([sys.executable, "bench.py", "validate", "suites/ci_smoke.yaml",
                           "--set", "scoring.judge.base_url=http://127.0.0.1:9/v1", "--set", "scoring.judge.model=m",
                           "--set", f"scoring.judge.api_key_env={KEY_ENV}"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "scoring.judge.base_url: cannot reach http://127.0.0.1:9/v1" in proc.stderr
    assert "EMPTY" not in proc.stderr + proc.stdout      # the key is never printed


def test_ctrl_c_keeps_what_arrived_and_the_rerun_resumes(serve, tmp_path):
    server = serve(prefer="longer")
    judge = make_judge(server, tmp_path, max_concurrency=1)
    items = items_with_lengths(10)
    seen = []

    def interrupt_after_five():
        seen.append(1)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        judge.fill(judge.missing(items), progress=interrupt_after_five)
    time.sleep(0.5)     # a request in flight at the Ctrl-C still lands in the cache
    assert server.requests <= 6      # nothing more is sent after it (5 answered, at most 1 in flight)
    resumed = make_judge(server, tmp_path)
    todo, before = resumed.missing(items), server.requests
    assert len(todo) <= 20 - 5 and len(judge.cache) + len(todo) == 20
    resumed.fill(todo)
    assert server.requests - before == len(todo) and len(resumed.table(items)) == 10


def test_against_chosen_gives_its_own_win_rate(serve, tmp_path):
    from types import SimpleNamespace

    from bench.evaluation.scoring.judge import comparisons

    tokenizer = lambda text, add_special_tokens=False: SimpleNamespace(input_ids=list(text))   # noqa: E731
    pairs = [_Pair(i) for i in range(4)]                       # chosen: i + 3 characters
    policy = [Generation(f"p{i}", 0, "w" * 4, 4, "stop") for i in range(4)]
    reference = [Generation(f"p{i}", 0, "v" * 2, 2, "stop") for i in range(4)]
    items = comparisons(pairs, policy, reference, ["reference", "chosen"], tokenizer)
    assert [(c.against, c.other_tokens) for c in items[:2]] == [("reference", 2), ("chosen", 3)]
    judge = make_judge(serve(prefer="longer"), tmp_path)
    judge.fill(judge.missing(items))
    rows = {metric: est.value for _, metric, est in judge_rows(judge.table(items), n_boot=20, seed=0)}
    # 4 characters beat 2 always; against chosen (3, 4, 5, 6 characters): win, tie, loss, loss
    assert rows["win_rate_vs_reference"] == 1.0 and rows["win_rate_vs_chosen"] == pytest.approx(1.5 / 4)


def test_validity_position_consistency_and_gold_agreement_by_hand():
    import pandas as pd

    from bench.tables.validity import judge_facts

    keys = {"prompt_id": ["a", "b", "c", "d"], "sample_index": [0, 0, 0, 0]}
    frame = pd.DataFrame({**keys, "against": "reference", "pref_policy_first": [1.0, 1.0, -1.0, float("nan")],
                          "pref_policy_second": [1.0, -1.0, -1.0, 1.0], "outcome": [1.0, 0.5, 0.0, 0.5],
                          "consistent": [True, False, True, False], "unparseable": [0, 0, 0, 1]})
    gold = pd.DataFrame({**keys, "gold": [1.0, 1.0, 0.0, 0.0]})
    ref_gold = pd.DataFrame({**keys, "gold": [0.0, 1.0, 1.0, 0.0]})
    facts = judge_facts({"dpo seed=0": frame}, {"dpo seed=0": gold}, ref_gold)
    assert facts["position_consistency"] == 0.5
    # A's preference over the 7 parsed calls: +1 +1 -1 (first order), -1 +1 +1 -1 (second, sign flipped)
    assert facts["first_position_preferred"] == pytest.approx(4 / 7)
    assert facts["unparseable_calls"] == pytest.approx(1 / 8)
    # The verifier decides a (policy right) and c (reference right): the judge agrees on both.
    assert facts["gold_agreement"] == {"n_decisive": 2, "agreement": 1.0, "tie_share": 0.0}


def test_alpaca_eval_logprobs_average_both_orders(serve, tmp_path):
    import math

    alpaca = load_template("alpaca_eval")
    assert alpaca.prob_a({"m": math.log(0.6), "M": math.log(0.2), "x": 0.0}) == pytest.approx(0.75)   # 0.6 / 0.8
    assert alpaca.prob_a(None) is None and alpaca.prob_a({"x": 0.0}) is None
    # P(first position) = 0.8 in both orders: the policy's probability is 0.8 shown first and
    # 0.2 shown second; their mean, the LC fit's soft label, is exactly 1/2.
    judge = make_judge(serve(prefer="first"), tmp_path, template="alpaca_eval")
    items = items_with_lengths(12)
    judge.fill(judge.missing(items))
    table = judge.table(items)
    assert table["prob_policy_first"].tolist() == pytest.approx([0.8] * 12)
    assert table["prob_policy_second"].tolist() == pytest.approx([0.2] * 12)
    assert table["soft_outcome"].tolist() == pytest.approx([0.5] * 12)
    rows = {metric: est.value for _, metric, est in judge_rows(table, n_boot=20, seed=0)}
    assert rows["lc_win_rate_vs_reference"] == pytest.approx(0.5)


def test_alpaca_eval_logprob_lc_removes_a_length_preference(serve, tmp_path):
    judge = make_judge(serve(prefer="longer_soft"), tmp_path, template="alpaca_eval")
    items = items_with_lengths(150)
    judge.fill(judge.missing(items))
    table = judge.table(items)
    # the soft labels come from the log-probs (not the hard verdicts' 0, 1/2, 1)
    assert table["prob_policy_first"].notna().all() and not table["soft_outcome"].isin([0.0, 0.5, 1.0]).all()
    rows = {metric: est for _, metric, est in judge_rows(table, n_boot=100, seed=0)}
    assert rows["win_rate_vs_reference"].value > 0.6
    assert abs(rows["lc_win_rate_vs_reference"].value - 0.5) < 0.03

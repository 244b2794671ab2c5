"""`arith`: a synthetic arithmetic task with a gold verifier, deterministic by seed.

The offline analogue of the math-reasoning setting of the ADPO paper (docs/DESIGN.md §5):
a prompt is a problem (``"Compute 37+8*6-5.\\n"``), a response is a short worked solution
(``" 8*6=48. 37+48=85. 85-5=80. Answer: 80"``). The rejected response of a pair errs at
one random step and carries the wrong value through to a wrong final answer, so
token-level and segment-level objectives see where the pairs diverge. A length confound
imitates the verbosity bias of real preference data: with probability `length_confound`
the chosen response is padded with filler, with probability `rejected_filler` the
rejected one is. Difficulty is set by the operand count and magnitudes (`ArithOptions`).

Pairs and SFT demonstrations draw their problems from two disjoint halves of the problem
space (split by a stable hash of the prompt), so SFT never trains on an eval prompt.
"""
from __future__ import annotations

import dataclasses
import random
import re
import zlib
from dataclasses import dataclass

from bench.data.records import PreferencePair
from bench.data.registry import BuiltinTask, register_task
from bench.errors import BenchError
from trainers.errors import nearest

_ANSWER = re.compile(r"Answer:\s*(-?\d+)")
_FILLER = (
    " Let me double-check each step.",
    " I will go slowly and carefully.",
    " Every step is checked twice.",
    " This is a careful solution.",
)
# Every word the task writes: the word-level builtin tokenizer gives each its own token.
WORDS = tuple(sorted({w for text in ("Compute Answer", "Let me double check", *_FILLER) for w in re.findall(r"[A-Za-z]+", text)}))
_MAX_TRIES_PER_ITEM = 200  # rejection sampling: fail loudly when the problem space is too small


@dataclass(frozen=True)
class ArithOptions:
    """Difficulty and confound knobs (all may be set via the suite's `data.task_options`)."""

    min_operands: int = 2
    max_operands: int = 4
    max_operand: int = 30        # +/- operands are drawn from 1..max_operand
    max_factor: int = 9          # both factors of a product are drawn from 2..max_factor
    mult_prob: float = 0.3       # chance that an operator is '*'
    max_error: int = 9           # a wrong step is off by 1..max_error (either sign)
    length_confound: float = 0.3  # chance that the chosen response is padded with filler
    rejected_filler: float = 0.1  # chance that the rejected response is padded

    def __post_init__(self):
        if not 2 <= self.min_operands <= self.max_operands:
            raise BenchError(f"arith: need 2 <= min_operands <= max_operands, got {self.min_operands}, {self.max_operands}")
        if self.max_operand < 1 or self.max_factor < 2 or self.max_error < 1:
            raise BenchError("arith: max_operand must be >= 1, max_factor >= 2, max_error >= 1")
        for name in ("mult_prob", "length_confound", "rejected_filler"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise BenchError(f"arith: option {name} must be in [0, 1], got {getattr(self, name)}")


def parse_options(options: dict) -> ArithOptions:
    """Options from a suite; an unknown key is a one-line BenchError naming the nearest one."""
    known = [f.name for f in dataclasses.fields(ArithOptions)]
    for key in options:
        if key not in known:
            near = nearest(key, known)
            hint = f" (did you mean {near}?)" if near else f" (known: {', '.join(known)})"
            raise BenchError(f"arith: unknown task option {key!r}{hint}")
    return ArithOptions(**options)


# ---------------------------------------------------------------- problems and solutions
def _problem(rng: random.Random, opt: ArithOptions) -> tuple[list[int], list[str]]:
    count = rng.randint(opt.min_operands, opt.max_operands)
    ops = [rng.choices(["+", "-", "*"], weights=[(1 - opt.mult_prob) / 2] * 2 + [opt.mult_prob])[0]
           for _ in range(count - 1)]
    nums = [rng.randint(1, opt.max_operand) for _ in range(count)]
    for i, op in enumerate(ops):  # products stay small enough for a tiny model to learn
        if op == "*":
            nums[i], nums[i + 1] = rng.randint(2, opt.max_factor), rng.randint(2, opt.max_factor)
    return nums, ops


def expression(nums: list[int], ops: list[str]) -> str:
    return str(nums[0]) + "".join(op + str(n) for op, n in zip(ops, nums[1:]))


def solve(nums: list[int], ops: list[str], *, error_step: int | None = None, delta: int = 0):
    """Steps `(a, op, b, result)` with '*' first, then +/- left to right; returns (steps, answer).

    With `error_step` set, that step's result is off by `delta` and later steps use the
    wrong value, as a student who slipped once would.
    """
    nums, ops, steps = list(nums), list(ops), []

    def apply(i: int) -> None:
        a, op, b = nums[i], ops[i], nums[i + 1]
        result = a * b if op == "*" else a + b if op == "+" else a - b
        if len(steps) == error_step:
            result += delta
        steps.append((a, op, b, result))
        nums[i : i + 2] = [result]
        del ops[i]

    while "*" in ops:
        apply(ops.index("*"))
    while ops:
        apply(0)
    return steps, nums[0]


def render(steps, answer: int, filler: str = "") -> str:
    body = "".join(f" {a}{op}{b}={r}." for a, op, b, r in steps)
    return f"{body}{filler} Answer: {answer}"


def _filler(rng: random.Random, expr: str, answer: int) -> str:
    # Either a restatement of the result or a generic phrase: longer, never more correct.
    if rng.random() < 0.5:
        return f" Let me double-check: {expr} is {answer}."
    return rng.choice(_FILLER)


def _flawed(rng: random.Random, nums, ops, opt: ArithOptions):
    """A solution that errs at a random step; its final answer always differs from the truth."""
    _, truth = solve(nums, ops)
    for _ in range(_MAX_TRIES_PER_ITEM):
        step = rng.randrange(len(ops))
        delta = rng.choice([-1, 1]) * rng.randint(1, opt.max_error)
        steps, wrong = solve(nums, ops, error_step=step, delta=delta)
        if wrong != truth:  # an error cancelled out by a later step would not be a flaw
            return steps, wrong, step
    raise BenchError("arith: could not make a flawed solution (raise max_error)")


# ---------------------------------------------------------------- public API
def _prompts(rng: random.Random, n: int, opt: ArithOptions, half: int):
    """`n` distinct problems from one half of the problem space (0: pairs, 1: demos)."""
    seen: set[str] = set()
    for _ in range(n * _MAX_TRIES_PER_ITEM):
        if len(seen) == n:
            return
        nums, ops = _problem(rng, opt)
        prompt = f"Compute {expression(nums, ops)}.\n"
        if prompt in seen or zlib.crc32(prompt.encode()) % 2 != half:
            continue
        seen.add(prompt)
        yield prompt, nums, ops
    if len(seen) < n:
        raise BenchError(f"arith: only {len(seen)} distinct problems for n={n}; raise max_operand or max_operands")


def make_pairs(n: int, seed: int, **options) -> list[PreferencePair]:
    """`n` preference pairs with distinct prompts: chosen correct, rejected wrong at one step."""
    opt = parse_options(options)
    rng = random.Random(f"arith-pairs-{seed}")
    pairs = []
    for i, (prompt, nums, ops) in enumerate(_prompts(rng, n, opt, half=0)):
        steps, answer = solve(nums, ops)
        bad_steps, wrong, error_step = _flawed(rng, nums, ops, opt)
        expr = expression(nums, ops)
        pad_chosen = rng.random() < opt.length_confound
        pad_rejected = rng.random() < opt.rejected_filler
        chosen = render(steps, answer, _filler(rng, expr, answer) if pad_chosen else "")
        rejected = render(bad_steps, wrong, _filler(rng, expr, wrong) if pad_rejected else "")
        meta = {"answer": answer, "expression": expr, "error_step": error_step,
                "chosen_filler": pad_chosen, "rejected_filler": pad_rejected}
        pairs.append(PreferencePair(f"arith:{seed}:{i}", prompt, chosen, rejected, _messages(prompt), meta))
    return pairs


def make_sft_demos(n: int, seed: int, error_rate: float = 0.3, **options) -> list[PreferencePair]:
    """SFT demonstrations: correct with probability 1 - error_rate, flawed otherwise.

    `rejected` is empty and `metadata["sft"]` is True (the trainer uses `chosen` only).
    Filler appears with probability `length_confound` whether or not the demo is right, so
    the reference is sometimes verbose but verbosity is not yet tied to correctness.
    """
    if not 0.0 <= error_rate <= 1.0:
        raise BenchError(f"arith: error_rate must be in [0, 1], got {error_rate}")
    opt = parse_options(options)
    rng = random.Random(f"arith-demos-{seed}")
    demos = []
    for i, (prompt, nums, ops) in enumerate(_prompts(rng, n, opt, half=1)):
        steps, answer = solve(nums, ops)
        correct = rng.random() >= error_rate
        shown = answer
        if not correct:
            steps, shown, _ = _flawed(rng, nums, ops, opt)
        pad = rng.random() < opt.length_confound
        text = render(steps, shown, _filler(rng, expression(nums, ops), shown) if pad else "")
        meta = {"sft": True, "answer": answer, "correct": correct, "filler": pad}
        demos.append(PreferencePair(f"arith-sft:{seed}:{i}", prompt, text, "", _messages(prompt), meta))
    return demos


def _messages(prompt: str) -> tuple[dict, ...]:
    return ({"role": "user", "content": prompt.strip()},)


def pair_kind(pair: PreferencePair) -> str:
    """Which confound a pair carries: "correctness_only" (neither response padded: they
    differ in one wrong step), "chosen_padded", "rejected_padded" or "both_padded"."""
    chosen, rejected = bool(pair.metadata.get("chosen_filler")), bool(pair.metadata.get("rejected_filler"))
    return {(False, False): "correctness_only", (True, False): "chosen_padded",
            (False, True): "rejected_padded", (True, True): "both_padded"}[(chosen, rejected)]


def extract_answer(text: str) -> int | None:
    """The integer after the LAST "Answer:" in `text`, or None when there is none."""
    found = _ANSWER.findall(text or "")
    return int(found[-1]) if found else None


def verify(text: str, metadata: dict) -> float:
    """Gold verifier: 1.0 when the last stated answer equals metadata["answer"], else 0.0."""
    try:
        return 1.0 if extract_answer(text) == int(metadata["answer"]) else 0.0
    except (KeyError, TypeError, ValueError):
        return 0.0


# The data source `arith` (bench.data.registry); its answers are checked by the gold verifier `arith`.
register_task(BuiltinTask("arith", make_pairs, make_sft_demos, default_size=2000, words=WORDS, pair_kind=pair_kind),
              gold="arith", reference="synthetic multi-step arithmetic, the GSM8K-like math setting of the "
                                      "ADPO paper (docs/DESIGN.md section 5)")

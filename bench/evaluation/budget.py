"""The generation budget must fit the answers it is meant to measure.

A budget below the length of the responses the data prefers cuts answers off, and a
verifier then scores the cut answer as wrong: the measurement becomes one of the budget,
not of the policy (issue 11 found 72% of a DPO policy's samples cut at 48 tokens). The
runner checks the real eval split before anything is generated; `validate` checks the
same when it can build the data and the tokenizer without the network.
"""
from __future__ import annotations

from bench.errors import SuiteError

FIELD = "generation.max_new_tokens"


def longest_response_tokens(pairs, tokenizer) -> int:
    """Tokens of the longest chosen response, plus the EOS that ends a finished answer."""
    lengths = [len(tokenizer(pair.chosen, add_special_tokens=False)["input_ids"]) for pair in pairs if pair.chosen]
    return max(lengths, default=0) + 1


def check_generation_budget(suite, eval_pairs, tokenizer) -> str:
    """One line on the budget; a SuiteError naming both numbers when it would cut answers."""
    budget, longest = suite.generation.max_new_tokens, longest_response_tokens(eval_pairs, tokenizer)
    if budget >= longest:
        return f"generation budget: {budget} new tokens >= {longest} (longest chosen eval response + EOS)"
    if suite.generation.allow_truncation:
        return (f"generation budget: {budget} new tokens < {longest} (longest chosen eval response + EOS); "
                "allow_truncation is set, so long answers are cut (see the truncation rate)")
    raise SuiteError(suite.source, FIELD,
                     f"{budget} new tokens is below the longest chosen response of the eval split ({longest} tokens "
                     "with EOS): answers would be cut and scored wrong; raise it, or set generation.allow_truncation: "
                     "true to measure a truncated budget on purpose")

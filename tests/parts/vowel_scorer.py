"""A one-file scorer, as a contributor writes one (the README's example).

A sample scorer: one number per generated sample, here the share of its letters that are
vowels. Listed in a suite's `scoring.scorers`, it becomes the judgments column `vowels` and
the results rows `vowels/vowel_share` (mean over prompts) and `vowels/win_rate_vs_reference`.
"""
from __future__ import annotations

from bench.evaluation.scoring.registry import register_scorer


@register_scorer("vowels", metrics=("vowel_share",), reference="none: a test scorer")
def vowel_share(ctx, generations, pairs) -> list[float]:
    """Share of each sample's letters that are vowels (0 for a sample without letters)."""
    letters = [[c for c in g.text.lower() if c.isalpha()] for g in generations]
    return [sum(c in "aeiou" for c in chars) / len(chars) if chars else 0.0 for chars in letters]

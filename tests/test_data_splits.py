"""split_pairs: sizes, disjointness by prompt, determinism by seed."""
from __future__ import annotations

import pytest

from bench.data import arith
from bench.data.records import PreferencePair
from bench.data.splits import split_pairs
from bench.errors import DataError


def _ids(pairs):
    return [p.id for p in pairs]


def test_sizes_disjoint_and_covering():
    pairs = arith.make_pairs(200, seed=0)
    s = split_pairs(pairs, eval_prompts=30, drift_pairs=20, seed=1)
    assert (len(s.train), len(s.eval), len(s.drift)) == (150, 30, 20)
    assert sorted(_ids(s.train) + _ids(s.eval) + _ids(s.drift)) == sorted(_ids(pairs))
    order = {p.id: i for i, p in enumerate(pairs)}
    assert all(order[a.id] < order[b.id] for a, b in zip(s.train, s.train[1:]))  # input order kept


def test_deterministic_by_seed():
    pairs = arith.make_pairs(100, seed=0)
    a = split_pairs(pairs, eval_prompts=10, drift_pairs=10, seed=5)
    b = split_pairs(pairs, eval_prompts=10, drift_pairs=10, seed=5)
    c = split_pairs(pairs, eval_prompts=10, drift_pairs=10, seed=6)
    assert (_ids(a.train), _ids(a.eval), _ids(a.drift)) == (_ids(b.train), _ids(b.eval), _ids(b.drift))
    assert _ids(a.eval) != _ids(c.eval)


def test_no_prompt_leaks_when_prompts_repeat():
    # 20 prompts with 3 pairs each: a prompt's pairs must never straddle train and a held-out set
    pairs = [PreferencePair(f"r{i}", f"prompt {i // 3}", f" good {i}", f" bad {i}") for i in range(60)]
    s = split_pairs(pairs, eval_prompts=4, drift_pairs=5, seed=0)
    train_prompts = {p.prompt for p in s.train}
    assert len(s.eval) == 4 and len({p.prompt for p in s.eval}) == 4  # one whole pair per eval prompt
    assert len(s.drift) == 5
    assert train_prompts.isdisjoint({p.prompt for p in s.eval}) and train_prompts.isdisjoint({p.prompt for p in s.drift})
    assert set(_ids(s.eval)).isdisjoint(_ids(s.drift))
    # 4 eval prompts and 2 drift prompts (3 + 2 pairs) are held out: 14 prompts train
    assert len(s.train) == 14 * 3


def test_zero_held_out_and_too_few():
    pairs = arith.make_pairs(10, seed=0)
    s = split_pairs(pairs, eval_prompts=0, drift_pairs=0, seed=0)
    assert s.train == pairs and s.eval == [] and s.drift == []
    with pytest.raises(DataError, match="10 pairs with 10 unique prompts are too few"):
        split_pairs(pairs, eval_prompts=6, drift_pairs=4, seed=0)

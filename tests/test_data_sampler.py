"""LengthBucketSampler: disjoint rank shards, homogeneous batches, epochs, exact resume."""

from __future__ import annotations

import random

import pytest

from steermoe.data.sampler import LengthBucketSampler

_RNG = random.Random(0)
LENGTHS = [_RNG.uniform(1.0, 15.0) for _ in range(1000)]


def _sampler(**kw):
    args = {"batch_size": 8, "rank": 0, "world_size": 1, "seed": 3} | kw
    return LengthBucketSampler(LENGTHS, args.pop("batch_size"), **args)


def test_ranks_are_disjoint_and_cover_everything():
    shards = [list(_sampler(rank=r, world_size=4, drop_last=True)) for r in range(4)]
    seen = [i for shard in shards for batch in shard for i in batch]
    assert len(seen) == len(set(seen))  # disjoint
    assert len({len(s) for s in shards}) == 1  # equal batch counts per rank
    assert len(seen) >= len(LENGTHS) - 8 * 4 * 2  # at most a few tail batches dropped
    padded = [list(_sampler(rank=r, world_size=3)) for r in range(3)]
    assert set(i for s in padded for b in s for i in b) == set(range(len(LENGTHS)))


def test_batches_hold_similar_lengths():
    batches = list(_sampler(bucket_factor=50))
    spread = sum(max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in batches)
    random_batches = [list(range(i, i + 8)) for i in range(0, 1000, 8)]
    random_spread = sum(
        max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in random_batches
    )
    assert spread / len(batches) < 0.1 * random_spread / len(random_batches)


def test_set_epoch_reshuffles_deterministically():
    s = _sampler()
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1
    assert sorted(map(sorted, e0)) != sorted(map(sorted, e1))  # batch composition changes too
    other = _sampler()
    other.set_epoch(1)
    assert list(other) == e1
    assert list(_sampler(shuffle=False)) == list(_sampler(shuffle=False, seed=99))


def test_state_resume_continues_the_same_order():
    s = _sampler(rank=1, world_size=2)
    s.set_epoch(2)
    full = s.batches()
    it = iter(s)
    consumed = [next(it) for _ in range(5)]
    state = s.state_dict()
    assert state["epoch"] == 2 and state["batch_index"] == 5
    resumed = _sampler(rank=1, world_size=2)
    resumed.load_state_dict(state)
    assert consumed + list(resumed) == full
    assert len(list(resumed)) == len(full)  # the next pass starts from the top again
    with pytest.raises(ValueError, match="batch_size"):
        _sampler(batch_size=4).load_state_dict(state)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        _sampler(rank=2, world_size=2)

"""Length-bucketed, distributed-aware batch sampling with resumable position.

Use as a ``batch_sampler`` of a ``torch.utils.data.DataLoader``: it yields lists of dataset
indices. Per epoch: shuffle indices (seeded by ``seed + epoch``), cut them into mega-chunks of
``bucket_factor * batch_size * world_size`` items, sort each chunk by length (within each
group, e.g. task, when groups are given), cut it into batches (so a batch holds examples of
similar length and one group), shuffle the batch order, and deal batches
round-robin to ranks. Every rank computes the same global plan, so shards are disjoint and all
ranks see the same number of batches (the tail is dropped or padded by repeating batches).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any


class LengthBucketSampler:
    """Batches of similar-length clips; each rank gets a disjoint shard of the batches.

    Args:
        lengths: length of every example (tokens, seconds or frames); only the order matters.
        batch_size: examples per batch on one rank.
        rank: this worker's rank in ``[0, world_size)``.
        world_size: number of data-parallel workers.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        shuffle: shuffle within the epoch; ``False`` = sorted by length, deterministic order.
        drop_last: drop the final incomplete batch instead of keeping it.
        bucket_factor: batches per sorting chunk and rank; larger = more homogeneous batches,
            less randomness.
        groups: optional group of every example (e.g. its task); a batch never mixes groups.
    """

    def __init__(
        self,
        lengths: Sequence[float],
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        bucket_factor: int = 50,
        groups: Sequence[str] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        if bucket_factor < 1:
            raise ValueError(f"bucket_factor must be >= 1, got {bucket_factor}")
        if groups is not None and len(groups) != len(lengths):
            raise ValueError(f"groups has {len(groups)} entries for {len(lengths)} examples")
        self.lengths = [float(x) for x in lengths]
        self.groups = list(groups) if groups is not None else None
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.bucket_factor = bucket_factor
        self.epoch = 0
        self._start = 0  # batches of the current epoch already consumed on this rank

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (reshuffles); resets the resume position unless it is the same epoch."""
        if epoch != self.epoch:
            self._start = 0
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        order = list(range(n))
        rng = random.Random(self.seed + self.epoch)
        if self.shuffle:
            rng.shuffle(order)
            chunk = self.bucket_factor * self.batch_size * self.world_size
        else:
            chunk = max(n, 1)
        batches: list[list[int]] = []
        for start in range(0, n, chunk):
            part = order[start : start + chunk]
            by_group: dict[str, list[int]] = {}
            for i in part:
                by_group.setdefault(self.groups[i] if self.groups else "", []).append(i)
            for group in sorted(by_group):
                members = sorted(by_group[group], key=lambda i: (self.lengths[i], i))
                batches.extend(
                    members[i : i + self.batch_size]
                    for i in range(0, len(members), self.batch_size)
                )
        full = [b for b in batches if len(b) == self.batch_size]
        partial = [b for b in batches if len(b) < self.batch_size]
        if self.drop_last:
            batches = full
        else:
            batches = full + partial  # a short batch per chunk at most; keep them at the end
        if self.shuffle:
            rng.shuffle(batches)
        if not batches:
            return []
        per_rank = len(batches) // self.world_size
        if not self.drop_last and len(batches) % self.world_size:
            per_rank += 1
            batches += batches[: per_rank * self.world_size - len(batches)]  # pad by repeating
        return batches[: per_rank * self.world_size]

    def batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch, from the start."""
        return self._global_batches()[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.batches()
        start, self._start = self._start, 0
        for i in range(start, len(mine)):
            self._start = i + 1
            yield mine[i]
        self._start = 0

    def __len__(self) -> int:
        return len(self.batches())

    def state_dict(self) -> dict[str, Any]:
        """Position to resume from: epoch and batches consumed in it, plus the settings that
        define the order (checked on load)."""
        return {
            "epoch": self.epoch,
            "batch_index": self._start,
            "seed": self.seed,
            "num_examples": len(self.lengths),
            "batch_size": self.batch_size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration continues the saved epoch at the saved batch index.

        Raises:
            ValueError: the state came from a sampler with a different data order.
        """
        for key in ("seed", "num_examples", "batch_size", "world_size"):
            mine = self.seed if key == "seed" else self.state_dict()[key]
            if state.get(key) != mine:
                raise ValueError(
                    f"sampler state mismatch: {key}={state.get(key)!r}, this sampler has {mine!r}"
                )
        self.epoch = int(state["epoch"])
        self._start = int(state["batch_index"])

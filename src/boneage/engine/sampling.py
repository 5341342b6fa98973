"""Which training items each epoch visits, and in what order: one factory for every task.

``shuffle`` visits every item once in a seeded random order; ``balanced`` draws the same
number of items from every bone-age bin (rare ages as often as common ones); under ``torch.distributed`` each process gets its own disjoint share. The order depends
only on (seed, epoch), so a resumed run repeats the epoch it was interrupted in exactly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from boneage.registry import Registry

SAMPLERS: Registry = Registry("sampler")


def distributed_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside ``torch.distributed``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Only this process writes files (checkpoints, model files, plots, logs)."""
    return distributed_world()[0] == 0


class _EpochSampler(Sampler[int]):
    """Indices for one epoch, drawn by ``_draw(rng)`` and split across processes.

    ``world`` is the (rank, world size) whose share to give: ``None`` for this process's
    under ``torch.distributed``; ``(0, 1)`` for the whole epoch (e.g. a draw only the main
    process makes, such as validation's BatchNorm recalibration).
    """

    def __init__(self, n: int, seed: int, epoch: int, world: tuple[int, int] | None = None):
        self.n, self.seed, self.epoch = n, seed, epoch
        self.rank, self.world = distributed_world() if world is None else world
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is not in a world of {self.world} processes")

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _indices(self) -> np.ndarray:
        order = self._draw(np.random.default_rng([self.seed, self.epoch, 104729]))
        if self.world > 1:
            # Pad by wrapping so every process takes the same number of steps (DDP needs it).
            per = -(-len(order) // self.world)
            order = np.resize(order, per * self.world)[self.rank::self.world]
        return order

    def __iter__(self):
        return iter(self._indices().tolist())

    def __len__(self) -> int:
        return -(-self.n // self.world) if self.world > 1 else self.n


@SAMPLERS.register("shuffle")
class ShuffleSampler(_EpochSampler):
    """Every item once per epoch, in a seeded random order."""

    def __init__(self, n: int, seed: int, epoch: int, labels: Sequence[float] | None = None,
                 world: tuple[int, int] | None = None):
        super().__init__(n, seed, epoch, world)

    def _draw(self, rng):
        return rng.permutation(self.n)


@SAMPLERS.register("balanced")
class BalancedSampler(_EpochSampler):
    """``n`` draws per epoch, the same number from every bone-age bin (``bin_months`` wide,
    from the youngest item's bin to the oldest's; ``n % bins`` bins, chosen at random each
    epoch, give one more). Within a bin the items are visited in a random order, repeated as
    needed, so a small bin repeats its items rather than some of them. A bin between the
    youngest and the oldest with no item cannot be drawn from equally: an error."""

    def __init__(self, n: int, seed: int, epoch: int, labels: Sequence[float] | None = None,
                 bin_months: float = 12.0, world: tuple[int, int] | None = None):
        super().__init__(n, seed, epoch, world)
        if labels is None or len(labels) != n:
            raise ValueError("the balanced sampler needs one bone age per training item")
        if not bin_months > 0:
            raise ValueError(f"bin_months must be > 0, got {bin_months}")
        bins = np.floor(np.asarray(labels, dtype=np.float64) / bin_months).astype(np.int64)
        first = int(bins.min()) if n else 0
        counts = np.bincount(bins - first) if n else np.zeros(0, np.int64)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            lo = (first + empty[0]) * bin_months
            raise ValueError(f"the age bin [{lo:g}, {lo + bin_months:g}) months has no training image "
                             f"({empty.size} of {counts.size} bins are empty); widen "
                             f"train.sampler_options.bin_months (now {bin_months:g}) or use shuffle")
        self.bin_months = bin_months
        self.members = [np.flatnonzero(bins == first + b) for b in range(counts.size)]

    def bin_counts(self, order: np.ndarray) -> np.ndarray:
        """How many of ``order``'s items fall in each bin (youngest bin first)."""
        where = np.empty(self.n, np.int64)
        for b, items in enumerate(self.members):
            where[items] = b
        return np.bincount(where[np.asarray(order, np.int64)], minlength=len(self.members))

    def _draw(self, rng):
        k = len(self.members)
        per_bin = np.full(k, self.n // k)
        per_bin[rng.choice(k, size=self.n % k, replace=False)] += 1
        drawn = [np.resize(rng.permutation(items), count) for items, count in zip(self.members, per_bin)]
        return rng.permutation(np.concatenate(drawn)) if drawn else np.zeros(0, np.int64)


def make_sampler(name: str, n: int, seed: int, epoch: int, labels: Sequence[float] | None = None,
                 world: tuple[int, int] | None = None, **options) -> Sampler:
    """The recipe's sampler (``train.sampler``, with ``train.sampler_options``) for an epoch
    of ``n`` items: this process's share under ``torch.distributed``, or the share of
    ``world`` = (rank, world size)."""
    return SAMPLERS.create(name, where="train.sampler", n=n, seed=seed, epoch=epoch, labels=labels,
                           world=world, **options)

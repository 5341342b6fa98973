"""Which training items each epoch visits, and in what order: one factory for every task.

``shuffle`` visits every item once in a seeded random order; ``balanced`` draws items with
probability inversely proportional to the size of their age bin (rare ages as often as common
ones); under ``torch.distributed`` each process gets its own disjoint share. The order depends
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
    """``n`` draws with replacement, each age bin (``bin_months`` wide) equally likely."""

    def __init__(self, n: int, seed: int, epoch: int, labels: Sequence[float] | None = None,
                 bin_months: float = 12.0, world: tuple[int, int] | None = None):
        super().__init__(n, seed, epoch, world)
        if labels is None or len(labels) != n:
            raise ValueError("the balanced sampler needs one bone age per training item")
        if not bin_months > 0:
            raise ValueError(f"bin_months must be > 0, got {bin_months}")
        bins = np.floor(np.asarray(labels, dtype=np.float64) / bin_months).astype(np.int64)
        _, inverse, counts = np.unique(bins, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse]
        self.p = weights / weights.sum()

    def _draw(self, rng):
        return rng.choice(self.n, size=self.n, replace=True, p=self.p)


def make_sampler(name: str, n: int, seed: int, epoch: int, labels: Sequence[float] | None = None,
                 world: tuple[int, int] | None = None) -> Sampler:
    """The recipe's sampler (``train.sampler``) for an epoch of ``n`` items: this process's
    share under ``torch.distributed``, or the share of ``world`` = (rank, world size)."""
    return SAMPLERS.create(name, where="train.sampler", n=n, seed=seed, epoch=epoch, labels=labels,
                           world=world)

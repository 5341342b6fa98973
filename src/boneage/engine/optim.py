"""Optimisers and learning-rate schedules, by recipe name, over named parameter groups."""

from __future__ import annotations

import torch

from boneage.config import Recipe
from boneage.errors import ConfigError
from boneage.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
OPTIMIZERS.add("adam", torch.optim.Adam)
OPTIMIZERS.add("adamw", torch.optim.AdamW)
OPTIMIZERS.add("rmsprop", torch.optim.RMSprop)
OPTIMIZERS.add("sgd", torch.optim.SGD)

SCHEDULES: Registry = Registry("schedule")


@SCHEDULES.register("none")
def _no_schedule(optimizer, recipe: Recipe):
    return None


@SCHEDULES.register("step")
def _step_schedule(optimizer, recipe: Recipe):
    s = recipe.schedule
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)


@SCHEDULES.register("plateau")
def _plateau_schedule(optimizer, recipe: Recipe):
    s = recipe.schedule
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=s.gamma, patience=s.patience, min_lr=s.min_lr)


@SCHEDULES.register("cosine")
def _cosine_schedule(optimizer, recipe: Recipe):
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, recipe.train.epochs), eta_min=recipe.schedule.min_lr)


@SCHEDULES.register("inverse_time")
def _inverse_time_schedule(optimizer, recipe: Recipe):
    """``lr / (1 + decay * epochs)``, the epochs counted from when the optimiser was built: a
    new training phase starts again at the base rate, as recompiling a Keras model did (the
    paced-transfer paper's "decay of 0.05")."""
    decay = recipe.schedule.decay
    if not decay >= 0:
        raise ConfigError(f"schedule.decay must be >= 0, got {decay}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0 / (1.0 + decay * epoch))


def make_optimizer(recipe: Recipe, params) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``params``: parameters, or parameter groups (dicts with
    ``params`` and optionally a ``name`` and their own ``lr``) as a task declares them."""
    o = recipe.optim
    if not o.lr > 0:
        raise ConfigError(f"optim.lr must be > 0, got {o.lr}")
    return OPTIMIZERS.create(o.name, where="optim.name", strict=False, params=params, lr=o.lr,
                             weight_decay=o.weight_decay)


def make_scheduler(recipe: Recipe, optimizer):
    """The recipe's learning-rate schedule (None for ``none``)."""
    return SCHEDULES.create(recipe.schedule.name, where="schedule.name", optimizer=optimizer, recipe=recipe)

"""Paced transfer learning: the new head first, then one named stage more at a time.

Freshly initialised head layers give large, noisy gradients; fine-tuning the pretrained
layers under them from the first step can overwrite what they learned on ImageNet (the
paced-transfer paper, section 2.4). :class:`PhaseSchedule` keeps every stage a model names
(:mod:`boneage.models.stages`) frozen until the monitored training loss of the current phase
plateaus (:func:`plateaued`), then unfreezes the next stage of ``phases.order`` and asks the
loop to rebuild the optimisers. It is generic: any model that names its stages can use it,
through the task hooks every task inherits (:class:`boneage.engine.tasks.Task`).

Frozen stages stop learning weights; their BatchNorm statistics still follow the training
batches (the loop puts the networks in training mode), so normalisation adapts to
radiographs, which are far from ImageNet, while the weights wait for their phase.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from boneage.config import PhasesConfig
from boneage.errors import ConfigError
from boneage.models.stages import HEAD, stage_parameters


def plateaued(losses: Sequence[float], patience: int, threshold: float) -> bool:
    """Whether a phase's losses (oldest first, one per epoch) have plateaued: none of the last
    ``patience`` values is below the best value before them by more than ``threshold`` of
    it (relative). Needs at least ``patience + 1`` values; fewer is never a plateau."""
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    if len(losses) <= patience:
        return False
    best_before = min(losses[:-patience])
    return min(losses[-patience:]) >= best_before - threshold * abs(best_before)


def resolve_order(config: PhasesConfig, stages: Sequence[str]) -> list[str]:
    """``phases.order`` checked against the model's stages (bottom first); None gives the
    stages top to bottom, the order the paper unfreezes Xception's flows in."""
    stages = list(stages)
    order = list(reversed(stages)) if config.order is None else list(config.order)
    unknown = [s for s in order if s not in stages]
    if unknown:
        raise ConfigError(f"phases.order: the model has no stage {unknown[0]!r}; its stages: {stages}")
    if sorted(order) != sorted(stages):
        missing = [s for s in stages if s not in order]
        twice = sorted({s for s in order if order.count(s) > 1})
        what = f"lacks {missing}" if missing else f"names {twice} twice"
        raise ConfigError(f"phases.order {order} is not a permutation of the model's stages {stages} (it {what})")
    return order


class PhaseSchedule:
    """Which stages train now, and when the next one is unfrozen.

    Phase 0 trains the head and the first ``unfrozen`` stages of the order; each further phase
    adds the next stage. ``phase_starts`` holds the 1-based epoch each phase began at.
    """

    def __init__(self, config: PhasesConfig, stages: Sequence[str]):
        if config.patience < 1:
            raise ConfigError(f"phases.patience must be >= 1, got {config.patience}")
        if not config.threshold >= 0:
            raise ConfigError(f"phases.threshold must be >= 0 (a relative improvement), got {config.threshold}")
        self.config = config
        self.order = resolve_order(config, stages)
        if not 0 <= config.unfrozen <= len(self.order):
            raise ConfigError(f"phases.unfrozen must be in [0, {len(self.order)}] (stages of phases.order "
                              f"trained from the start), got {config.unfrozen}")
        self.unfrozen = config.unfrozen
        self.phase_starts = [1]

    @property
    def trainable(self) -> list[str]:
        """The stages that train in the current phase, in the order they were unfrozen."""
        return self.order[:self.unfrozen]

    @property
    def name(self) -> str:
        """The current phase as what trains in it: ``head``, ``head+exit``, ..."""
        return "+".join([HEAD, *self.trainable])

    def parameter_groups(self, model: nn.Module) -> list[dict]:
        """Freeze every stage not yet unfrozen, unfreeze the others and the head; the
        optimiser's groups, one per training part, named after it."""
        groups = stage_parameters(model)
        training = {HEAD, *self.trainable}
        for part, params in groups.items():
            for p in params:
                p.requires_grad_(part in training)
        return [{"name": part, "params": groups[part]} for part in (HEAD, *self.trainable)]

    def step(self, epoch: int, history: list[dict]) -> bool:
        """After epoch ``epoch`` (0-based, its row last in ``history``): mark the row with the
        phase it trained in, and unfreeze the next stage when the phase has plateaued.
        Returns True when a new phase begins (the optimisers must be rebuilt)."""
        row = history[-1]
        row["phase"] = self.name
        c = self.config
        if c.monitor not in row:
            raise ConfigError(f"phases.monitor {c.monitor!r} is not a metrics column; columns: {sorted(row)}")
        if not c.paced or self.unfrozen >= len(self.order):
            return False
        start = self.phase_starts[-1]
        losses = [r[c.monitor] for r in history if r["epoch"] >= start and r.get(c.monitor) is not None]
        if not plateaued(losses, c.patience, c.threshold):
            return False
        self.unfrozen += 1
        self.phase_starts.append(epoch + 2)  # the next epoch, 1-based
        return True

    def state_dict(self) -> dict:
        """The current phase, for the checkpoint."""
        return {"unfrozen": self.unfrozen, "phase_starts": list(self.phase_starts)}

    def load_state_dict(self, state: dict) -> None:
        """Continue in the phase :meth:`state_dict` recorded."""
        self.unfrozen = int(state["unfrozen"])
        self.phase_starts = [int(e) for e in state["phase_starts"]]

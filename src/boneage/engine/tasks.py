"""Tasks: what is specific to one kind of model, behind the interface the one loop uses.

The loop in :mod:`boneage.engine.trainer` knows nothing about bone ages, masks or
discriminators. A :class:`Task` builds the networks, declares their named parameter groups
(one optimiser per group set, rebuilt when a phase begins), turns a batch into named losses,
evaluates into named metrics, says which metric to monitor and in which direction, and
writes its model file. Bone-age regression is the task defined here; the others (``task:
segmentation``, ``task: gan``) live in the method packages above the engine and register
into :data:`TASKS` when they are imported (:mod:`boneage.evaluation.training` imports them
all), so the loop never imports them.

The loop writes no evaluation report itself: a task's :meth:`Task.finish` returns the
validation predictions, and whoever started training passes the report that writes them
(``fit(report=...)``).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from boneage.config import Recipe
from boneage.data.datasets import training_dataset
from boneage.data.labels import Sample
from boneage.engine.distributed import shared_cache
from boneage.engine.phases import PhaseSchedule
from boneage.engine.precision import amp_dtype, autocast, memory_format, to_input
from boneage.engine.sampling import make_sampler
from boneage.errors import ConfigError, InputError
from boneage.inference.aggregate import aggregate, tune_percentile
from boneage.inference.batch import predict_cached
from boneage.inference.torch_model import build_model, load_model_file, save_model_file
from boneage.losses import create_loss
from boneage.models.head import training_penalty
from boneage.models.stages import named_stages
from boneage.registry import Registry

TASKS: Registry = Registry("task")


@dataclass
class ValidationPredictions:
    """A task's predictions of its validation images by the best model, for the report the
    caller of :func:`~boneage.engine.trainer.fit` writes (bone age in months)."""

    samples: list[Sample]
    predictions: np.ndarray
    #: Per-image spread of the views' predictions (standard deviation, months).
    spreads: list[float] = field(default_factory=list)
    #: Merged into the report's summary (e.g. the MAE per aggregation of the views).
    extra: dict = field(default_factory=dict)


class Task:
    """Base class of a training task; one instance per run."""

    #: The evaluation metric that picks the best epoch, and whether lower or higher is better.
    monitor: str = "val_loss"
    mode: str = "min"
    #: The metrics columns ``training_curves.png`` shows.
    curves: tuple[str, ...] = ("train_loss", "val_loss", "val_mae")

    def __init__(self, recipe: Recipe, device: torch.device):
        self.recipe = recipe
        self.device = device
        #: What the loop set for this run: autocast dtype (None: full precision), input layout.
        self.amp_dtype = amp_dtype(recipe.train.amp, device)
        self.memory_format = memory_format(recipe.train.channels_last)
        #: Paced unfreezing (``recipe.phases``), built with the networks' first parameter groups.
        self.phases = None
        self._phase_state: dict | None = None

    # -- run settings the task's forward passes follow ---------------------------------------
    def autocast(self):
        """The context a training forward pass runs in (``train.amp``); the loop runs the
        backward pass outside it, as PyTorch asks."""
        return autocast(self.device, self.amp_dtype)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A batch tensor on the run's device, images in the run's memory format
        (``train.channels_last``)."""
        return to_input(tensor, self.device, self.memory_format)

    # -- data ------------------------------------------------------------------------------
    def setup(self, samples: list[Sample], train_idx: np.ndarray, val_idx: np.ndarray,
              progress: bool) -> Recipe:
        """Read the data and fill in what training learns before the first step (e.g. target
        scaling); returns the recipe as it will be stored."""
        raise NotImplementedError

    def train_dataset(self) -> torch.utils.data.Dataset:
        """The training dataset (with ``set_epoch``) the loop's sampler indexes."""
        raise NotImplementedError

    def sampler_labels(self) -> np.ndarray | None:
        """One value per training item for label-aware samplers (bone age), or None."""
        return None

    # -- networks and optimisation ---------------------------------------------------------
    def build_networks(self) -> dict[str, nn.Module]:
        """The networks, by name (``model``; ``generator`` and ``discriminator``; ...)."""
        raise NotImplementedError

    def parameter_groups(self, networks: dict[str, nn.Module]) -> dict[str, list[dict]]:
        """Named parameter groups per optimiser: ``{optimiser: [{"name", "params", ...}]}``.

        Called again whenever :meth:`on_epoch_end` starts a new phase, so a task can freeze or
        unfreeze parts and give groups their own learning rates. With ``recipe.phases`` the
        network it names is trained in phases (:mod:`boneage.engine.phases`): one group for
        the head and one per unfrozen stage, the rest frozen.
        """
        groups = {name: [{"name": name, "params": [p for p in net.parameters() if p.requires_grad]}]
                  for name, net in networks.items()}
        config = self.recipe.phases
        if config is not None:
            if config.network not in networks:
                raise ConfigError(f"phases.network {config.network!r}: this task trains {sorted(networks)}")
            net = networks[config.network]
            if self.phases is None:
                self.phases = PhaseSchedule(config, named_stages(net))
                if self._phase_state is not None:
                    self.phases.load_state_dict(self._phase_state)
            groups[config.network] = self.phases.parameter_groups(net)
        return groups

    def training_losses(self, batch: dict, networks: dict[str, nn.Module]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(optimiser name, loss)``; the loop steps that optimiser before asking for the
        next (a GAN yields the discriminator's loss, then the generator's)."""
        raise NotImplementedError

    def evaluate(self, networks: dict[str, nn.Module]) -> dict[str, float]:
        """Named validation metrics (must include :attr:`monitor` when there is validation data)."""
        raise NotImplementedError

    # -- hooks -----------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, networks: dict[str, nn.Module]) -> None:
        """Before the epoch's first step (0-based ``epoch``)."""

    def on_epoch_end(self, epoch: int, history: list[dict], networks: dict[str, nn.Module]) -> bool:
        """After validation; return True when a new phase begins (the loop rebuilds the
        optimisers from :meth:`parameter_groups`). May add columns to ``history[-1]``, the
        epoch's metrics row (a paced run writes the ``phase`` it trained in)."""
        return self.phases.step(epoch, history) if self.phases is not None else False

    def state_dict(self) -> dict:
        """Task state a resumed run needs (e.g. the current phase)."""
        return {"phases": self.phases.state_dict()} if self.phases is not None else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (before or after the networks' groups were built)."""
        if "phases" in state:
            self._phase_state = state["phases"]
            if self.phases is not None:
                self.phases.load_state_dict(state["phases"])

    # -- output ----------------------------------------------------------------------------
    def save_model(self, path: Path, networks: dict[str, nn.Module], info: dict) -> None:
        """Write the model file of the best epoch so far (``info``: what the loop records)."""
        raise NotImplementedError

    def finish(self, model_path: Path, out: Path) -> ValidationPredictions | None:
        """After training, on the main process: the task's own reports on the best model
        (summaries, examples); returns its validation predictions when it makes bone-age
        predictions, which the caller's report writes, else None."""
        return None


def task_class(name: str) -> type[Task]:
    """The task registered as ``name``. An unknown name is a ConfigError that also says where
    tasks come from: those beyond regression register when their package is imported."""
    try:
        return TASKS.get(name)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (segmentation and gan register when boneage.segmentation.task / "
                          "boneage.enhancement.task are imported; boneage.evaluation.training imports "
                          "every task)") from None


def create_task(recipe: Recipe, device: torch.device) -> Task:
    """The task a recipe names (``task: regression`` by default)."""
    task_class(recipe.task)
    return TASKS.create(recipe.task, where="task", strict=False, recipe=recipe, device=device)


def recalibrate_batchnorm(model: nn.Module, batches, device: torch.device) -> int:
    """Replace every BatchNorm layer's running mean and variance by their plain average over
    ``batches`` (dicts with ``image`` and ``sex``), as "precise BN" does; returns the count used.

    The exponential running averages trail the weights by ~1/momentum steps; when the
    weights move fast (from scratch, high constant learning rate) eval-mode predictions can
    be far worse than the model is. Weights are untouched.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise ValueError("recalibrate_batchnorm needs at least one batch")
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    used = 0
    try:
        with torch.no_grad():
            for batch in itertools.chain([first], batches):
                model(batch["image"].to(device), batch["sex"].to(device))
                used += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return used


def prepare_recipe(recipe: Recipe, train_ages: np.ndarray) -> Recipe:
    """A copy of the recipe with target scaling filled in from the training labels."""
    recipe = copy.deepcopy(recipe)
    # The stored recipe says exactly what the network was fed, whatever the model declares later.
    recipe.channels, recipe.input_mean, recipe.input_std = recipe.input_spec()
    if recipe.target.mean is None:
        recipe.target.mean = float(np.mean(train_ages))
    if recipe.target.std is None:
        recipe.target.std = float(np.std(train_ages)) or 1.0
    return recipe


@TASKS.register("regression")
class RegressionTask(Task):
    """Bone age in months from an image and sex: one network, one loss, validation MAE."""

    monitor = "val_mae"
    mode = "min"

    def setup(self, samples, train_idx, val_idx, progress):
        self.samples, self.train_idx, self.val_idx = samples, train_idx, val_idx
        self.ages = np.array([s.boneage for s in samples], dtype=np.float64)
        self.recipe = prepare_recipe(self.recipe, self.ages[train_idx])
        self.cache = shared_cache(samples, self.recipe, progress)  # built once for all processes
        self._train_ds = training_dataset(self.cache, train_idx, self.recipe, seed=self.recipe.train.seed)
        self.loss_fn = create_loss(self.recipe.loss.name, **self.recipe.loss.options)
        self.loss_fn.prepare(self.ages[train_idx])
        return self.recipe

    def train_dataset(self):
        return self._train_ds

    def sampler_labels(self):
        ds = self._train_ds
        return self.ages[ds.item_images()] if hasattr(ds, "item_images") else None

    def build_networks(self):
        return {"model": build_model(self.recipe)}

    def training_losses(self, batch, networks):
        with self.autocast():
            pred = networks["model"](self.to_device(batch["image"]), self.to_device(batch["sex"]))
        # The loss in full precision: reduced precision would round small errors away.
        loss = self.loss_fn(pred.float(), self.to_device(batch["target"]), self.to_device(batch["age"]))
        # Plus the model's own regularisation (BoneAgeNet's L2 on its output layer; 0 for most).
        yield "model", loss + training_penalty(networks["model"])

    def evaluate(self, networks):
        model, tc = networks["model"], self.recipe.train
        if tc.bn_recalibration_batches:
            # A fixed draw per epoch, independent of the training order; the whole draw, not
            # a share, since only the main process validates.
            sampler = make_sampler("shuffle", len(self._train_ds), tc.seed + 500_009, self._epoch,
                                   world=(0, 1))
            recal = DataLoader(self._train_ds, batch_size=tc.batch_size, sampler=sampler,
                               num_workers=tc.num_workers)
            recalibrate_batchnorm(model, itertools.islice(recal, tc.bn_recalibration_batches), self.device)
        if not len(self.val_idx):
            return {}
        preds, _ = predict_cached(model, self.recipe, self.cache, self.val_idx, self.device, tc.batch_size)
        true = self.ages[self.val_idx]
        t = self.recipe.target
        scaled = torch.tensor((preds - t.mean) / t.std, dtype=torch.float32)
        target = torch.tensor((true - t.mean) / t.std, dtype=torch.float32)
        return {"val_loss": float(self.loss_fn.validation_loss(scaled, target, torch.tensor(true))),
                "val_mae": float(np.mean(np.abs(preds - true)))}

    def on_epoch_start(self, epoch, networks):
        self._epoch = epoch
        self._train_ds.set_epoch(epoch)

    def save_model(self, path, networks, info):
        # The held-back images by id: evaluate --holdout finds exactly them again.
        info = {**info, "val_ids": [self.samples[i].id for i in self.val_idx]}
        save_model_file(path, networks["model"], self.recipe, info=info)

    def finish(self, model_path, out):
        """Tune the best model's aggregation of its views on the validation images (stored
        in its file) and return its validation predictions."""
        if not len(self.val_idx):
            return None
        return _tune_on_validation(model_path, self.cache, self.val_idx, self.samples, self.ages, self.device)


def _tune_on_validation(model_path: Path, cache, val_idx, samples, ages, device) -> ValidationPredictions:
    """Validation predictions of the best model; records its MAE per aggregation of the
    views and, when the recipe asks, tunes the percentile, both in the model file."""
    if not model_path.exists():
        raise InputError("no model file was written", model_path)
    model, recipe, info = load_model_file(model_path, device)
    preds, per_view = predict_cached(model, recipe, cache, val_idx, device)
    true = ages[val_idx]
    by_aggregate = {m: float(np.mean(np.abs([aggregate(v, m) for v in per_view] - true)))
                    for m in ("mean", "median")}
    info["val_mae_by_aggregate"] = by_aggregate
    if recipe.inference.tune_percentile:
        q, mae_q = tune_percentile(per_view, true)
        recipe.inference.aggregate, recipe.inference.percentile = "percentile", q
        by_aggregate[f"percentile_{q:g}"] = mae_q
        preds = np.array([aggregate(v, "percentile", q) for v in per_view])
        info["val_mae"] = mae_q
    save_model_file(model_path, model, recipe, info)
    return ValidationPredictions([samples[i] for i in val_idx], preds,
                                 spreads=[float(np.std(v)) for v in per_view],
                                 extra={"mae_by_aggregate": by_aggregate})

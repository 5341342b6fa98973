"""Find a broken recipe in seconds, before any data is read or any folder is written.

:func:`check_recipe` builds every component a recipe names (transforms, model, loss,
optimiser, schedule, aggregation) and pushes one synthetic radiograph through the whole
training and inference path. A typo or an impossible combination (a patch larger than the
preprocessed image, an input too small for the network) ends as one
:class:`~boneage.errors.ConfigError` line naming the key, instead of an error after an
epoch of training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from boneage.config import Recipe
from boneage.data.datasets import to_input_tensor
from boneage.data.synthetic import make_radiograph
from boneage.engine.optim import make_optimizer, make_scheduler
from boneage.engine.phases import PhaseSchedule
from boneage.engine.sampling import make_sampler
from boneage.engine.tasks import task_class
from boneage.errors import BoneAgeError, ConfigError
from boneage.inference.aggregate import AGGREGATES
from boneage.inference.torch_model import build_model
from boneage.inference.modelfile import read_model_metadata
from boneage.losses import create_loss
from boneage.models.registry import MODELS, model_input_spec
from boneage.models.stages import named_stages
from boneage.transforms import build_pipeline, canonical_pipeline, make_views, patch_grid

#: Side of the synthetic radiograph used for the check (small: the check must be fast).
CHECK_IMAGE_SIZE = 320


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_recipe(recipe: Recipe, train_step: bool = False) -> None:
    """Raise :class:`ConfigError` if any part of ``recipe`` cannot be built or run.

    ``train_step=True`` also takes one optimiser step on the synthetic image (slower on big
    inputs; the test suite uses it to show every shipped recipe trains). The recipe's task
    must be registered (:func:`boneage.engine.tasks.task_class`).
    """
    task_check = getattr(task_class(recipe.task), "check_recipe", None)
    if task_check is not None:  # a task whose networks are not bone-age models checks itself
        return task_check(recipe, train_step)
    tc = recipe.train
    for key, value, low in (("train.epochs", tc.epochs, 1), ("train.batch_size", tc.batch_size, 1),
                            ("train.bn_recalibration_batches", tc.bn_recalibration_batches, 0),
                            ("train.num_workers", tc.num_workers, 0)):
        if value < low:
            raise ConfigError(f"{key} must be >= {low}, got {value}")
    if not 0.0 <= recipe.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {recipe.data.val_fraction}")
    if recipe.data.limit is not None and recipe.data.limit < 1:
        raise ConfigError(f"data.limit must be >= 1, got {recipe.data.limit}")
    MODELS.get(recipe.model.name)
    channels, _, std = recipe.input_spec()
    if not std > 0:
        raise ConfigError(f"input_std must be > 0, got {std}")
    if channels < 1:
        raise ConfigError(f"channels must be >= 1, got {channels}")
    AGGREGATES.get(recipe.inference.aggregate)
    # Built, not only looked up: a sampler option it lacks or a bad bin width is one line now.
    build_checked("train.sampler", lambda: make_sampler(tc.sampler, 229, 0, 0, np.arange(229.0), world=(0, 1),
                                                 **tc.sampler_options))
    if not 0.0 <= recipe.inference.percentile <= 100.0:
        raise ConfigError(f"inference.percentile must be in [0, 100], got {recipe.inference.percentile}")
    if tc.init_from:
        try:
            read_model_metadata(tc.init_from)
        except BoneAgeError as exc:
            raise ConfigError(f"train.init_from: {exc}") from None
    pretrained = recipe.model.options.get("pretrained")
    if isinstance(pretrained, str) and pretrained != "package" and not Path(pretrained).is_file():
        raise ConfigError(f"model.options.pretrained: weights file not found: {pretrained}")

    pre = build_checked("preprocess", lambda: build_pipeline(recipe.preprocess))
    aug = build_checked("augment", lambda: build_pipeline(recipe.augment.steps, recipe.augment.mode))
    canonical = build_checked("canonical", lambda: canonical_pipeline(recipe))
    loss = build_checked("loss", lambda: create_loss(recipe.loss.name, **recipe.loss.options))
    # Pretrained weights are irrelevant to whether the recipe fits together, and slow to load.
    model = build_checked("model", lambda: build_model(
        recipe, **({"pretrained": None} if "pretrained" in recipe.model.options else {})))
    if recipe.phases is not None and recipe.phases.network == "model":
        # A stage the model lacks or an order that is not a permutation fails here, not after epoch 1.
        build_checked("phases", lambda: PhaseSchedule(recipe.phases, named_stages(model)))
    optimizer = build_checked("optim", lambda: make_optimizer(recipe, model.parameters()))
    build_checked("schedule", lambda: make_scheduler(recipe, optimizer))

    image = make_radiograph(120.0, "M", size=CHECK_IMAGE_SIZE, seed=0).image
    prepared = run_checked("preprocess", lambda: pre(image))
    p = recipe.patches
    if p is not None:
        run_checked("patches", lambda: patch_grid(prepared.shape, p.n, p.size))
    train_view = prepared[:p.size, :p.size] if p is not None else prepared
    train_view = run_checked("augment", lambda: aug(train_view, np.random.default_rng(0)))
    if canonical is not None:
        train_view = run_checked("canonical", lambda: canonical(train_view))
    views = run_checked("inference", lambda: make_views(
        prepared, (p.n, p.size) if p else None, recipe.inference.flip_tta,
        recipe.inference.tta_angles, canonical, recipe.inference.tta_border))
    for k, steps in enumerate(recipe.inference.preprocess_views):
        where = f"inference.preprocess_views.{k}"
        variant = build_checked(where, lambda: build_pipeline(steps))
        if any(getattr(t, "subnetwork", None) for t in getattr(variant, "transforms", [variant])):
            raise ConfigError(f"{where}: steps that run a network of their own are allowed only in "
                              "preprocess and canonical (model files embed networks from those)")
        copy = run_checked(where, lambda: variant(image))
        copy_views = run_checked(where, lambda: make_views(
            copy, (p.n, p.size) if p else None, recipe.inference.flip_tta,
            recipe.inference.tta_angles, canonical, recipe.inference.tta_border))
        if copy_views.shape[1:] != views.shape[1:]:
            raise ConfigError(f"{where} gives {copy_views.shape[1]}x{copy_views.shape[2]} views but preprocess "
                              f"gives {views.shape[1]}x{views.shape[2]}; their views must match")
    if views.shape[1:] != train_view.shape:
        raise ConfigError(f"training sees {train_view.shape[0]}x{train_view.shape[1]} images but inference "
                          f"views are {views.shape[1]}x{views.shape[2]}; check preprocess, patches and canonical")
    least = model_input_spec(recipe.model.name, recipe.model.options).min_size
    if least is not None and min(train_view.shape) < least:
        raise ConfigError(f"the model input is {train_view.shape[0]}x{train_view.shape[1]} px, but "
                          f"{recipe.model.name} reads at least {least} px a side; raise the size of "
                          "the preprocess/canonical resize steps")
    x = to_input_tensor(train_view[None], recipe)
    model.eval()
    with torch.no_grad():
        out = run_checked("model", lambda: model(x, torch.ones(1)))
    if tuple(out.shape) != (1,):
        raise ConfigError(f"model {recipe.model.name!r} must give one value per image, gave shape {tuple(out.shape)}")
    loss.prepare(np.array([60.0, 120.0, 180.0]))
    run_checked("loss", lambda: loss(out, torch.zeros(1), torch.tensor([120.0])))
    if train_step:
        # Two images: BatchNorm needs more than one value per channel in training mode.
        model.train()
        xb, sex = torch.cat([x, x.flip(-1)]), torch.tensor([1.0, 0.0])

        def step():
            value = loss(model(xb, sex), torch.zeros(2), torch.tensor([120.0, 120.0]))
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            return value
        run_training_step(step)


def run_training_step(step) -> None:
    """One training step (``step()`` returns its loss) of a recipe check: a failure or a
    non-finite loss becomes a one-line ConfigError (every task's check uses it)."""
    value = run_checked("training step", step)
    if not torch.isfinite(value):
        raise ConfigError(f"the recipe's first training step gives a non-finite loss ({value.item()})")


def build_checked(key: str, build):
    """``build()``, a failure to build turned into one ConfigError line naming the recipe
    ``key`` (every task's check builds its components through it)."""
    try:
        return build()
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(key) else f"{key}: {message}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: {_first_line(exc)}") from None


def run_checked(stage: str, fn):
    """``fn()``, a failure on the synthetic radiograph turned into one ConfigError line naming
    the ``stage`` it failed at; the package's own errors pass as they are."""
    try:
        return fn()
    except BoneAgeError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise ConfigError(f"the recipe fails at its {stage} step on a synthetic "
                          f"{CHECK_IMAGE_SIZE}x{CHECK_IMAGE_SIZE} radiograph: {_first_line(exc)}") from None

"""The one training loop every recipe uses.

``fit(recipe, out_dir)`` reads the data, splits it, preprocesses each image once, trains with
the recipe's optimiser / schedule / loss, validates each epoch on whole images (aggregating
patches and flips exactly as inference does), and writes into ``out_dir``:

- ``model.safetensors``: best weights by validation MAE + the recipe (a standalone model file)
- ``checkpoint.pt``: everything needed to resume after an interruption (written each epoch)
- ``metrics.csv`` and ``training_curves.png``
- ``val_predictions.csv``, ``val_summary.json``, ``val_pred_vs_true.png``, ``val_bland_altman.png``
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from boneage.config import Recipe
from boneage.data.datasets import PreprocessedCache, training_dataset
from boneage.data.labels import Sample, load_samples
from boneage.data.split import train_val_split
from boneage.engine.check import check_recipe
from boneage.errors import ConfigError, InputError
from boneage.fileutils import atomic_path
from boneage.inference.batch import predict_cached
from boneage.inference.modelfile import build_model, save_model_file
from boneage.losses import create_loss
from boneage.registry import Registry

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.safetensors"
METRICS = "metrics.csv"


@dataclass
class FitResult:
    out_dir: Path
    model_path: Path
    best_val_mae: float | None
    best_epoch: int | None
    epochs_run: int
    seconds: float
    history: list[dict]


def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def make_optimizer(recipe: Recipe, params) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``params`` (parameters or named parameter groups)."""
    o = recipe.optim
    if not o.lr > 0:
        raise ConfigError(f"optim.lr must be > 0, got {o.lr}")
    return OPTIMIZERS.create(o.name, where="optim.name", strict=False, params=params, lr=o.lr,
                             weight_decay=o.weight_decay)


def make_scheduler(recipe: Recipe, optimizer):
    """The recipe's learning-rate schedule (None for ``none``)."""
    return SCHEDULES.create(recipe.schedule.name, where="schedule.name", optimizer=optimizer, recipe=recipe)


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _init_weights(model: torch.nn.Module, path: str) -> None:
    """Start from the weights of another model file of the same architecture."""
    from safetensors.torch import load_file

    from boneage.inference.modelfile import read_model_metadata

    read_model_metadata(path)  # a clear error for a missing or foreign file
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    if missing or unexpected:
        raise InputError(f"weights do not fit this recipe's model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})", path)


def recalibrate_batchnorm(model: torch.nn.Module, batches, device: torch.device) -> int:
    """Replace every BatchNorm layer's running mean and variance by their plain average over
    ``batches`` (dicts with ``image`` and ``sex``), as "precise BN" does; returns the count used.

    The exponential running averages trail the weights by ~1/momentum steps; when the
    weights move fast (from scratch, high constant learning rate) eval-mode predictions can
    be far worse than the model is. Weights are untouched.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
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
    if recipe.target.mean is None:
        recipe.target.mean = float(np.mean(train_ages))
    if recipe.target.std is None:
        recipe.target.std = float(np.std(train_ages)) or 1.0
    return recipe


def fit(recipe: Recipe, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
        samples: list[Sample] | None = None, log=None) -> FitResult:
    """Train ``recipe`` and write the model file, metrics and plots to ``out_dir``.

    Progress messages go to ``log`` (default: the ``boneage`` logger at INFO level).
    """
    log = log or logger.info
    t_start = time.time()
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise InputError("output folder already holds a training run; pass --resume to continue it "
                         "or choose another --out", out)
    if resume and not ckpt_path.exists():
        raise InputError("nothing to resume: no checkpoint.pt in the output folder", out)
    tc = recipe.train
    device = resolve_device(tc.device)
    # Every component on a synthetic image first: a typo fails in seconds, not after an epoch.
    check_recipe(recipe)
    seed_everything(tc.seed)

    if samples is None:
        d = recipe.data
        samples = load_samples(d.root or None, d.csv, d.image_dir, d.limit)
    ages = np.array([s.boneage for s in samples], dtype=np.float64)
    train_idx, val_idx = train_val_split(len(samples), recipe.data.val_fraction, recipe.data.split_seed)
    recipe = prepare_recipe(recipe, ages[train_idx])
    log(f"data: {len(train_idx)} train / {len(val_idx)} validation images; device {device}")

    cache = PreprocessedCache(samples, recipe, progress=progress)
    train_ds = training_dataset(cache, train_idx, recipe, seed=tc.seed)
    model = build_model(recipe)
    if tc.init_from:
        _init_weights(model, tc.init_from)
    model = model.to(device)
    loss_fn = create_loss(recipe.loss.name, **recipe.loss.options)
    loss_fn.prepare(ages[train_idx])
    optimizer = make_optimizer(recipe, model.parameters())
    scheduler = make_scheduler(recipe, optimizer)
    use_amp = tc.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # Created only once data, model and optimiser are known to be valid: a failed start
    # leaves no output folder behind.
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    best_mae, best_epoch, bad_epochs, start_epoch = None, None, 0, 0
    if resume:
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        # Through from_dict, so a checkpoint from before a new recipe field gained its
        # default still resumes.
        if Recipe.from_dict(state["recipe"]).to_dict() != recipe.to_dict():
            raise InputError("the checkpoint was trained with a different recipe; "
                             "resume with the same config and overrides", ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        history, best_mae, best_epoch = state["history"], state["best_mae"], state["best_epoch"]
        bad_epochs, start_epoch = state["bad_epochs"], state["epoch"] + 1
        log(f"resuming after epoch {start_epoch} (best val MAE {best_mae})")

    model_path = out / MODEL_FILE
    stopped_early = False
    for epoch in range(start_epoch, tc.epochs):
        t0 = time.time()
        train_ds.set_epoch(epoch)
        gen = torch.Generator().manual_seed(tc.seed * 1_000_003 + epoch)
        loader = DataLoader(train_ds, batch_size=tc.batch_size, shuffle=True, generator=gen,
                            num_workers=tc.num_workers, drop_last=len(train_ds) > tc.batch_size,
                            pin_memory=device.type == "cuda", persistent_workers=False)
        model.train()
        total, count = 0.0, 0
        it = loader
        if progress:
            from tqdm import tqdm
            it = tqdm(loader, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="batch", leave=False, disable=None)
        for step, batch in enumerate(it):
            if tc.max_steps_per_epoch is not None and step >= tc.max_steps_per_epoch:
                break
            x = batch["image"].to(device, non_blocking=True)
            y = batch["target"].to(device)
            sex = batch["sex"].to(device)
            with torch.autocast(device.type, enabled=use_amp):
                pred = model(x, sex)
            loss = loss_fn(pred.float(), y, batch["age"].to(device))
            if not torch.isfinite(loss):
                raise RuntimeError(f"training diverged at epoch {epoch + 1} step {step} (loss {loss.item()}); "
                                   "lower optim.lr or set optim.grad_clip")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if recipe.optim.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            total += loss.item() * x.shape[0]
            count += x.shape[0]
            if progress:
                it.set_postfix(loss=f"{total / count:.4f}")
        row = {"epoch": epoch + 1, "train_loss": total / max(count, 1), "val_loss": None,
               "val_mae": None, "lr": optimizer.param_groups[0]["lr"]}
        if tc.bn_recalibration_batches:
            recal = DataLoader(train_ds, batch_size=tc.batch_size, shuffle=True, num_workers=tc.num_workers,
                               generator=torch.Generator().manual_seed(tc.seed * 1_000_003 + epoch + 500_009))
            recalibrate_batchnorm(model, itertools.islice(recal, tc.bn_recalibration_batches), device)
        if len(val_idx):
            preds, _ = predict_cached(model, recipe, cache, val_idx, device, tc.batch_size)
            t = recipe.target
            scaled = torch.tensor((preds - t.mean) / t.std, dtype=torch.float32)
            target = torch.tensor((ages[val_idx] - t.mean) / t.std, dtype=torch.float32)
            row["val_loss"] = float(loss_fn.validation_loss(scaled, target, torch.tensor(ages[val_idx])))
            row["val_mae"] = float(np.mean(np.abs(preds - ages[val_idx])))
        row["seconds"] = round(time.time() - t0, 1)
        history.append(row)

        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(row["val_mae"] if row["val_mae"] is not None else row["train_loss"])
            else:
                scheduler.step()

        improved = row["val_mae"] is None or best_mae is None or row["val_mae"] < best_mae
        if improved:
            best_mae, best_epoch, bad_epochs = row["val_mae"], epoch + 1, 0
            save_model_file(model_path, model, recipe, info={
                "val_mae": best_mae, "epoch": best_epoch, "n_train": int(len(train_idx)),
                "n_val": int(len(val_idx)), "device": str(device)})
        else:
            bad_epochs += 1
        _write_csv(out / METRICS, history)
        _atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict() if scheduler is not None else None,
                            "epoch": epoch, "history": history, "best_mae": best_mae,
                            "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                            "recipe": recipe.to_dict()}, ckpt_path)
        mae_txt = "-" if row["val_mae"] is None else f"{row['val_mae']:.2f}"
        log(f"epoch {epoch + 1}/{tc.epochs}: train loss {row['train_loss']:.4f}  val MAE {mae_txt} months"
            f"  lr {row['lr']:.2e}  {row['seconds']}s")
        if tc.early_stopping is not None and bad_epochs >= tc.early_stopping:
            log(f"early stopping: no validation improvement for {bad_epochs} epochs")
            stopped_early = True
            break

    from boneage.evaluation.plots import plot_training_curves
    plot_training_curves(history, out / "training_curves.png")
    if len(val_idx):
        _write_validation_report(model_path, recipe, cache, val_idx, samples, ages, device, out)
    elapsed = time.time() - t_start
    log(f"done in {elapsed:.0f}s{' (stopped early)' if stopped_early else ''}: best val MAE "
        f"{'-' if best_mae is None else f'{best_mae:.2f}'} at epoch {best_epoch}; model: {model_path}")
    return FitResult(out, model_path, best_mae, best_epoch, len(history), elapsed, history)


def _write_validation_report(model_path, recipe, cache, val_idx, samples, ages, device, out: Path):
    """Validation predictions, summary and plots of the best model; tunes the percentile."""
    from boneage.evaluation import metrics, plots
    from boneage.inference.aggregate import aggregate, tune_percentile
    from boneage.inference.modelfile import load_model_file

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
    male = np.array([samples[i].male for i in val_idx])
    _write_csv(out / "val_predictions.csv", [
        {"id": samples[i].id, "male": samples[i].male, "boneage": float(true[j]),
         "predicted": round(float(preds[j]), 2), "spread": round(float(np.std(per_view[j])), 2)}
        for j, i in enumerate(val_idx)])
    summary = metrics.summarize(preds, true, male)
    summary["mae_by_aggregate"] = by_aggregate
    (out / "val_summary.json").write_text(json.dumps(summary, indent=2))
    plots.plot_pred_vs_true(preds, true, out / "val_pred_vs_true.png", male=male)
    plots.plot_bland_altman(preds, true, out / "val_bland_altman.png")

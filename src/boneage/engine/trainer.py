"""The one training loop every recipe uses.

``fit(recipe, out_dir)`` checks the recipe on a synthetic image, reads and splits the data,
and trains the recipe's task (:mod:`boneage.engine.tasks`): each epoch it visits the items
the sampler draws, steps the optimiser each loss belongs to, evaluates, keeps the best model
by the task's monitored metric and checkpoints. It writes into ``out_dir``:

- ``model.safetensors``: the best model + its recipe (a standalone model file)
- ``checkpoint.pt``: everything needed to resume after an interruption (written each epoch)
- ``metrics.csv`` and ``training_curves.png``
- the task's reports (for regression: ``val_predictions.csv``, ``val_summary.json``, plots)

Every random draw of an epoch (sampler order, augmentation, dropout) is seeded by
(seed, epoch), so a run killed at any point and resumed from its last checkpoint ends with
the same metrics as an uninterrupted one. Only the main process writes files, so the loop
runs unchanged under ``torchrun``.
"""

from __future__ import annotations

import csv
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from boneage.config import Recipe
from boneage.data.labels import Sample, load_samples
from boneage.data.split import train_val_split
from boneage.engine.check import check_recipe
from boneage.engine.optim import make_optimizer, make_scheduler
from boneage.engine.sampling import is_main_process, make_sampler
from boneage.engine.tasks import Task, create_task
from boneage.errors import ConfigError, InputError
from boneage.fileutils import atomic_path

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.safetensors"
METRICS = "metrics.csv"


@dataclass
class FitResult:
    out_dir: Path
    model_path: Path
    best_val_mae: float | None     # the best value of the task's monitored metric
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


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows as CSV, atomically; the columns are the union of the rows' keys, in order."""
    if not rows:
        return
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _init_weights(model: torch.nn.Module, path: str) -> None:
    """Start from the weights of another model file of the same architecture."""
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    if missing or unexpected:
        raise InputError(f"weights do not fit this recipe's model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})", path)


class _Optimisation:
    """The optimisers (one per name the task declares), their schedules and gradient scaling."""

    def __init__(self, recipe: Recipe, task: Task, networks: dict, device: torch.device):
        self.recipe, self.task, self.networks = recipe, task, networks
        self.scaler = torch.amp.GradScaler("cuda", enabled=recipe.train.amp and device.type == "cuda")
        self.rebuild()

    def rebuild(self) -> None:
        groups = self.task.parameter_groups(self.networks)
        self.optimizers = {name: make_optimizer(self.recipe, g) for name, g in groups.items()}
        self.schedulers = {name: make_scheduler(self.recipe, opt) for name, opt in self.optimizers.items()}

    def step(self, name: str, loss: torch.Tensor) -> None:
        if name not in self.optimizers:
            raise RuntimeError(f"the task yielded a loss for optimiser {name!r}, which it did not declare")
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        clip = self.recipe.optim.grad_clip
        if clip:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
        self.scaler.step(opt)
        self.scaler.update()

    def schedule(self, monitored: float | None) -> None:
        for sched in self.schedulers.values():
            if sched is None:
                continue
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if monitored is not None:
                    sched.step(monitored)
            else:
                sched.step()

    def lr(self) -> float:
        first = next(iter(self.optimizers.values()))
        return first.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items() if s is not None},
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            if s is not None and k in state.get("schedulers", {}):
                s.load_state_dict(state["schedulers"][k])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _loss_column(name: str, n_optimisers: int) -> str:
    return "train_loss" if n_optimisers == 1 else f"train_loss_{name}"


def _is_better(value: float | None, best: float | None, mode: str) -> bool:
    if value is None or best is None:
        return True
    return value < best if mode == "min" else value > best


def _legacy_checkpoint(state: dict) -> dict:
    """Checkpoints written before tasks held one network and one optimiser at the top level."""
    if "networks" in state:
        return state
    return {**state, "networks": {"model": state["model"]}, "task": {},
            "optimisation": {"optimizers": {"model": state["optimizer"]},
                             "schedulers": {"model": state["scheduler"]} if state.get("scheduler") else {},
                             "scaler": None}}


def fit(recipe: Recipe, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
        progress: bool = True, samples: list[Sample] | None = None, log=None) -> FitResult:
    """Train ``recipe`` and write the model file, metrics and plots to ``out_dir``.

    A folder that already holds a run or a model file is refused unless ``resume`` (continue
    its checkpoint) or ``overwrite`` (start afresh over it) is given. Progress messages go
    to ``log`` (default: the ``boneage`` logger at INFO level).
    """
    log = log or logger.info
    t_start = time.time()
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT
    if resume and overwrite:
        raise InputError("resume and overwrite exclude each other")
    if not resume and not overwrite and (ckpt_path.exists() or (out / MODEL_FILE).exists()):
        what = "a training run" if ckpt_path.exists() else "a model file"
        raise InputError(f"output folder already holds {what}; resume it, overwrite it, or "
                         "choose another output folder", out)
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
    train_idx, val_idx = train_val_split(len(samples), recipe.data.val_fraction, recipe.data.split_seed)
    log(f"data: {len(train_idx)} train / {len(val_idx)} validation images; device {device}")
    task = create_task(recipe, device)
    recipe = task.setup(samples, train_idx, val_idx, progress)
    networks = task.build_networks()
    if tc.init_from:
        if set(networks) != {"model"}:
            raise ConfigError(f"train.init_from works for one-network tasks; {recipe.task!r} has {sorted(networks)}")
        _init_weights(networks["model"], tc.init_from)
    networks = {k: v.to(device) for k, v in networks.items()}
    optimisation = _Optimisation(recipe, task, networks, device)
    train_ds = task.train_dataset()
    labels = task.sampler_labels()

    main = is_main_process()
    if main and overwrite:
        for name in (CHECKPOINT, MODEL_FILE, METRICS):
            (out / name).unlink(missing_ok=True)
    if main:
        # Created only once data, model and optimiser are known to be valid: a failed start
        # leaves no output folder behind.
        out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    best, best_epoch, bad_epochs, start_epoch = None, None, 0, 0
    if resume:
        state = _legacy_checkpoint(torch.load(ckpt_path, map_location=device, weights_only=False))
        # Through from_dict, so a checkpoint from before a new recipe field gained its
        # default still resumes.
        if Recipe.from_dict(state["recipe"]).method_dict() != recipe.method_dict():
            raise InputError("the checkpoint was trained with a different recipe; "
                             "resume with the same config and overrides", ckpt_path)
        for name, net in networks.items():
            net.load_state_dict(state["networks"][name])
        task.load_state_dict(state.get("task", {}))
        optimisation.rebuild()  # the task's phase decides the parameter groups
        optimisation.load_state_dict(state["optimisation"])
        history, best, best_epoch = state["history"], state["best_mae"], state["best_epoch"]
        bad_epochs, start_epoch = state["bad_epochs"], state["epoch"] + 1
        log(f"resuming after epoch {start_epoch} (best {task.monitor} {best})")

    model_path = out / MODEL_FILE
    stopped_early = False
    for epoch in range(start_epoch, tc.epochs):
        t0 = time.time()
        # Dropout and any other torch draw of this epoch depend on (seed, epoch) only.
        torch.manual_seed(tc.seed * 1_000_003 + epoch)
        task.on_epoch_start(epoch, networks)
        sampler = make_sampler(tc.sampler, len(train_ds), tc.seed, epoch, labels)
        loader = DataLoader(train_ds, batch_size=tc.batch_size, sampler=sampler,
                            num_workers=tc.num_workers, drop_last=len(train_ds) > tc.batch_size,
                            pin_memory=device.type == "cuda", persistent_workers=False)
        for net in networks.values():
            net.train()
        totals: dict[str, float] = {}
        count = 0
        it = loader
        if progress and main:
            from tqdm import tqdm
            it = tqdm(loader, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="batch", leave=False, disable=None)
        for step, batch in enumerate(it):
            if tc.max_steps_per_epoch is not None and step >= tc.max_steps_per_epoch:
                break
            n = len(next(iter(batch.values())))
            for name, loss in task.training_losses(batch, networks):
                if not torch.isfinite(loss):
                    raise RuntimeError(f"training diverged at epoch {epoch + 1} step {step} "
                                       f"({name} loss {loss.item()}); lower optim.lr or set optim.grad_clip")
                optimisation.step(name, loss)
                totals[name] = totals.get(name, 0.0) + loss.item() * n
            count += n
            if progress and main:
                it.set_postfix(loss=f"{sum(totals.values()) / max(count, 1):.4f}")
        row: dict = {"epoch": epoch + 1}
        for name in optimisation.optimizers:
            row[_loss_column(name, len(optimisation.optimizers))] = totals.get(name, 0.0) / max(count, 1)
        for net in networks.values():
            net.eval()
        metrics = task.evaluate(networks)
        row.update(metrics)
        row.setdefault(task.monitor, None)
        row["lr"] = optimisation.lr()
        row["seconds"] = round(time.time() - t0, 1)
        history.append(row)
        monitored = row.get(task.monitor)
        optimisation.schedule(monitored if monitored is not None else row.get("train_loss"))

        improved = _is_better(monitored, best, task.mode)
        if improved:
            best, best_epoch, bad_epochs = monitored, epoch + 1, 0
            if main:
                task.save_model(model_path, networks, {
                    "val_mae" if task.monitor == "val_mae" else task.monitor: best, "epoch": best_epoch,
                    "n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "device": str(device)})
        else:
            bad_epochs += 1
        if task.on_epoch_end(epoch, history, networks):
            optimisation.rebuild()
            log(f"epoch {epoch + 1}: a new training phase begins; optimisers rebuilt")
        if main:
            write_csv(out / METRICS, history)
            _atomic_torch_save({"networks": {k: v.state_dict() for k, v in networks.items()},
                                "optimisation": optimisation.state_dict(), "task": task.state_dict(),
                                "epoch": epoch, "history": history, "best_mae": best,
                                "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                                "recipe": recipe.to_dict()}, ckpt_path)
        shown = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in row.items() if k.startswith("train_loss"))
        mon = "-" if monitored is None else f"{monitored:.2f}"
        log(f"epoch {epoch + 1}/{tc.epochs}: {shown}  {task.monitor} {mon}  lr {row['lr']:.2e}  {row['seconds']}s")
        if tc.early_stopping is not None and bad_epochs >= tc.early_stopping:
            log(f"early stopping: no validation improvement for {bad_epochs} epochs")
            stopped_early = True
            break

    if main:
        from boneage.evaluation.plots import plot_training_curves
        plot_training_curves(history, out / "training_curves.png")
        task.finish(model_path, out)
    elapsed = time.time() - t_start
    log(f"done in {elapsed:.0f}s{' (stopped early)' if stopped_early else ''}: best {task.monitor} "
        f"{'-' if best is None else f'{best:.2f}'} at epoch {best_epoch}; model: {model_path}")
    return FitResult(out, model_path, best, best_epoch, len(history), elapsed, history)

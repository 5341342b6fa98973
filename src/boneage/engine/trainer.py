"""The one training loop every recipe uses.

``fit(recipe, out_dir)`` checks the recipe on a synthetic image, reads and splits the data,
and trains the recipe's task (:mod:`boneage.engine.tasks`): each epoch it visits the items
the sampler draws, steps the optimiser each loss belongs to, evaluates, keeps the best model
by the task's monitored metric and checkpoints. It writes into ``out_dir``:

- ``model.safetensors``: the best model + its recipe (a standalone model file)
- ``checkpoint.pt``: everything needed to resume after an interruption (written each epoch)
- ``metrics.csv`` and ``training_curves.png``
- the task's own reports (segmentation: ``val_summary.json``; GAN: examples and summary)
- the report of the validation predictions, when the caller passes one (``report=``; for
  regression :func:`boneage.evaluation.training.fit` passes the one that writes
  ``val_predictions.csv``, ``val_summary.json`` and their plots)

Every random draw of an epoch (sampler order, augmentation, dropout) is seeded by
(seed, epoch), so a run killed at any point and resumed from its last checkpoint ends with
the same metrics as an uninterrupted one.

Under ``torchrun --nproc_per_node N -m boneage train ...`` every process runs :func:`fit`:
it joins the process group (:mod:`boneage.engine.distributed`), trains its share of every
batch through DistributedDataParallel, and only the main process reports, validates and
writes files.
"""

from __future__ import annotations

import csv
import itertools
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from boneage.config import Recipe
from boneage.data.labels import Sample, load_samples
from boneage.data.split import train_val_split
from boneage.engine import distributed
from boneage.engine.check import check_recipe
from boneage.engine.curves import plot_training_curves
from boneage.engine.optim import make_optimizer, make_scheduler
from boneage.engine.precision import grad_scaler
from boneage.engine.sampling import distributed_world, is_main_process, make_sampler
from boneage.engine.tasks import Task, ValidationPredictions, create_task
from boneage.errors import ConfigError, InputError
from boneage.fileutils import atomic_path
from boneage.inference.torch_model import read_weights

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.safetensors"
METRICS = "metrics.csv"


#: Writes the report of a run's validation predictions: called on the main process as
#: ``report(out_dir, samples, predictions, prefix="val_", spreads=..., extra=...)``, the
#: signature of :func:`boneage.evaluation.report.write_prediction_report`.
PredictionReport = Callable[..., object]


@dataclass
class FitResult:
    """What :func:`fit` returns: where the files are, the best epoch, and every epoch's row."""

    out_dir: Path
    model_path: Path
    best_val_mae: float | None     # the best value of the task's monitored metric
    best_epoch: int | None
    epochs_run: int
    seconds: float
    history: list[dict]


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """'auto' → CUDA when available, else CPU.

    ``local_rank``: this process's index on its machine when torchrun started several; 'auto'
    and 'cuda' then mean GPU ``local_rank``, and naming one GPU for all is refused.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
        if local_rank is None:
            return torch.device(name)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    if local_rank is not None and name.startswith("cuda"):
        if name != "cuda":
            raise ConfigError(f"train.device {name!r} names one GPU for every process torchrun started; "
                              "use cuda or auto (each process takes GPU LOCAL_RANK)")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but this machine shows {torch.cuda.device_count()} "
                              f"GPU(s); start at most {torch.cuda.device_count()} processes per node")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (the draws outside an epoch)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _silent(*_args) -> None:
    """The log of a process that is not the main one: one process reports, as one writes."""


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
    """Start from the weights of another model file of the same architecture (its embedded
    preprocessing networks stay out: the recipe's own preprocess steps bring theirs)."""
    missing, unexpected = model.load_state_dict(read_weights(path, embedded=False), strict=False)
    if missing or unexpected:
        raise InputError(f"weights do not fit this recipe's model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})", path)


class Optimisation:
    """The optimisers (one per name the task declares), their schedules and gradient scaling
    (enabled for fp16 mixed precision; its state is part of the checkpoint)."""

    def __init__(self, recipe: Recipe, task: Task, networks: dict, device: torch.device):
        self.recipe, self.task, self.networks = recipe, task, networks
        self.scaler = grad_scaler(device, task.amp_dtype)
        self.rebuild()

    def rebuild(self) -> None:
        """Build the optimisers and schedules afresh from the task's current parameter groups
        (at the start, and when a new training phase begins)."""
        groups = self.task.parameter_groups(self.networks)
        self.optimizers = {name: make_optimizer(self.recipe, g) for name, g in groups.items()}
        self.schedulers = {name: make_scheduler(self.recipe, opt) for name, opt in self.optimizers.items()}

    def step(self, name: str, loss: torch.Tensor) -> None:
        """Backward ``loss`` and step optimiser ``name`` (clipping and scaling as the recipe says)."""
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
        """Advance every schedule by one epoch (a plateau schedule on ``monitored``)."""
        for sched in self.schedulers.values():
            if sched is None:
                continue
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if monitored is not None:
                    sched.step(monitored)
            else:
                sched.step()

    def lr(self) -> float:
        """The first optimiser's current learning rate (for the metrics)."""
        first = next(iter(self.optimizers.values()))
        return first.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        """Optimisers, schedules and the gradient scaler, for the checkpoint."""
        return {"optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items() if s is not None},
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; a scaler state is kept only where scaling is enabled."""
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            if s is not None and k in state.get("schedulers", {}):
                s.load_state_dict(state["schedulers"][k])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def make_loader(dataset, sampler, batch_size: int, num_workers: int, device: torch.device,
                skip_steps: int = 0) -> DataLoader:
    """The training loader of one epoch (or one benchmark): ``batch_size`` items per step of
    this process, the incomplete last batch dropped when there is more than one, memory
    pinned for fast copies to a GPU. ``skip_steps``: leave out the epoch's first steps (a run
    resumed from a checkpoint written within the epoch); the later steps get the same items
    as in an uninterrupted epoch."""
    drop_last = len(sampler) > batch_size
    if skip_steps:
        sampler = SkipSampler(sampler, skip_steps * batch_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=device.type == "cuda", persistent_workers=False)


class SkipSampler(Sampler):
    """``sampler`` without its first ``n`` items."""

    def __init__(self, sampler: Sampler, n: int):
        self.sampler, self.n = sampler, n

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.n, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.n)


def train_step(task: Task, networks: dict, optimisation: Optimisation, batch: dict,
               where: str = "") -> dict[str, float]:
    """One training step on ``batch``: each loss the task yields steps its optimiser before
    the task is asked for the next. Returns the losses by optimiser name; a non-finite loss
    stops training with a message saying what to change."""
    losses: dict[str, float] = {}
    for name, loss in task.training_losses(batch, networks):
        if not torch.isfinite(loss):
            raise RuntimeError(f"training diverged{where} ({name} loss {loss.item()}); "
                               "lower optim.lr or set optim.grad_clip")
        optimisation.step(name, loss)
        losses[name] = loss.item()
    return losses


def recipe_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two recipe mappings (lists compared whole)."""
    keys = list(dict.fromkeys([*a, *b]))
    out: list[str] = []
    for key in keys:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += recipe_differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


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
        progress: bool = True, samples: list[Sample] | None = None, log=None,
        report: PredictionReport | None = None) -> FitResult:
    """Train ``recipe`` and write the model file, metrics and plots to ``out_dir``.

    A folder that already holds a run or a model file is refused unless ``resume`` (continue
    its checkpoint) or ``overwrite`` (start afresh over it) is given. Progress messages go
    to ``log`` (default: the ``boneage`` logger at INFO level). ``report`` writes the
    validation predictions of a task that makes them (:data:`PredictionReport`); without
    one, none is written (the model file still records the validation MAE).

    The recipe's task must be registered (:data:`boneage.engine.tasks.TASKS`): regression
    always is; :mod:`boneage.evaluation.training` registers every task and passes the report.

    Started by torchrun (``WORLD_SIZE`` > 1), every process calls this: it joins the process
    group, trains on its share of each batch, and returns once the main process has written
    the files. A process count the data or the batch cannot be split over is refused, as one
    :class:`ConfigError`, before any process group is formed.
    """
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
    rank, local_rank, world = distributed.planned_world()
    device = resolve_device(tc.device, local_rank if world > 1 else None)
    log = (log or logger.info) if rank == 0 else _silent
    # Every component on a synthetic image first: a typo fails in seconds, not after an epoch.
    check_recipe(recipe)
    seed_everything(tc.seed)

    if samples is None:
        d = recipe.data
        samples = load_samples(d.root or None, d.csv, d.image_dir, d.limit)
    train_idx, val_idx = train_val_split(len(samples), recipe.data.val_fraction, recipe.data.split_seed)
    # Before the process group exists: every process fails alike and none waits for another.
    distributed.check_world(tc.batch_size, len(train_idx), world)
    with distributed.session(device, world):
        log(f"data: {len(train_idx)} train / {len(val_idx)} validation images; device {device}"
            + (f" x {world} processes ({tc.batch_size // world} images of each batch per process)"
               if world > 1 else ""))
        history, best, best_epoch, stopped_early, model_path, monitor = _train(
            recipe, out, samples, train_idx, val_idx, device, world, resume, overwrite, progress, log,
            report)
    elapsed = time.time() - t_start
    log(f"done in {elapsed:.0f}s{' (stopped early)' if stopped_early else ''}: best {monitor} "
        f"{'-' if best is None else f'{best:.2f}'} at epoch {best_epoch}; model: {model_path}")
    return FitResult(out, model_path, best, best_epoch, len(history), elapsed, history)


def _report(predictions: ValidationPredictions | None, report: PredictionReport | None, out: Path) -> None:
    """Hand a task's validation predictions to the caller's report, when there are both."""
    if predictions is None or report is None:
        return
    report(out, predictions.samples, predictions.predictions, prefix="val_",
           spreads=predictions.spreads, extra=predictions.extra)


def prepare(recipe: Recipe, samples: list[Sample], train_idx, val_idx, device: torch.device,
            progress: bool = False) -> tuple[Task, Recipe, dict, Optimisation]:
    """What the loop trains: the recipe's task set up on the data, the recipe as it will be
    stored, the networks (weights from ``train.init_from`` if given, on ``device`` in the
    run's memory format) and their optimisation. ``benchmarks/train_throughput.py`` times
    steps on exactly this."""
    task = create_task(recipe, device)
    recipe = task.setup(samples, train_idx, val_idx, progress)
    networks = task.build_networks()
    if recipe.train.init_from:
        if set(networks) != {"model"}:
            raise ConfigError(f"train.init_from works for one-network tasks; {recipe.task!r} has {sorted(networks)}")
        _init_weights(networks["model"], recipe.train.init_from)
    networks = {k: v.to(device, memory_format=task.memory_format) for k, v in networks.items()}
    return task, recipe, networks, Optimisation(recipe, task, networks, device)


def _train(recipe: Recipe, out: Path, samples, train_idx, val_idx, device: torch.device, world: int,
           resume: bool, overwrite: bool, progress: bool, log, report: PredictionReport | None = None):
    """The loop of :func:`fit` once the data and the process group are known to be valid."""
    tc = recipe.train
    ckpt_path = out / CHECKPOINT
    main = is_main_process()
    rank = distributed_world()[0]
    task, recipe, networks, optimisation = prepare(recipe, samples, train_idx, val_idx, device, progress and main)
    train_ds = task.train_dataset()

    if main and overwrite:
        for name in (CHECKPOINT, MODEL_FILE, METRICS):
            (out / name).unlink(missing_ok=True)
    if main:
        # Created only once data, model and optimiser are known to be valid: a failed start
        # leaves no output folder behind.
        out.mkdir(parents=True, exist_ok=True)
    # The other processes read the folder only once the main one has made it what it is.
    distributed.barrier()
    history: list[dict] = []
    best, best_epoch, bad_epochs, start_epoch = None, None, 0, 0
    partial = None  # where within an epoch a resumed run stopped
    if resume:
        state = _legacy_checkpoint(torch.load(ckpt_path, map_location=device, weights_only=False))
        # Through from_dict, so a checkpoint from before a new recipe field gained its
        # default still resumes.
        differ = recipe_differences(Recipe.from_dict(state["recipe"]).method_dict(), recipe.method_dict())
        if differ:
            shown = ", ".join(differ[:6]) + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
            raise InputError(f"the checkpoint was trained with another recipe (differing: {shown}); "
                             "resume with the same config and overrides", ckpt_path)
        for name, net in networks.items():
            net.load_state_dict(state["networks"][name])
        task.load_state_dict(state.get("task", {}))
        optimisation.rebuild()  # the task's phase decides the parameter groups
        optimisation.load_state_dict(state["optimisation"])
        history, best, best_epoch = state["history"], state["best_mae"], state["best_epoch"]
        bad_epochs, start_epoch = state["bad_epochs"], state["epoch"] + 1
        partial = state.get("partial")
        if partial:
            log(f"resuming epoch {partial['epoch'] + 1} at step {partial['step']} "
                f"(best {task.monitor} {best})")
        else:
            log(f"resuming after epoch {start_epoch} (best {task.monitor} {best})")
        # Nobody overwrites the checkpoint (main, after its next epoch) while another reads it.
        distributed.barrier()
    train_nets = distributed.wrap(networks, device)
    batch_size = tc.batch_size // world  # this process's share of the global batch
    model_path = out / MODEL_FILE
    stopped_early = False

    def checkpoint(epoch_done: int, within: dict | None = None) -> None:
        """Everything a resumed run needs; ``within``: where in the next epoch it stopped."""
        _atomic_torch_save({"networks": {k: v.state_dict() for k, v in networks.items()},
                            "optimisation": optimisation.state_dict(), "task": task.state_dict(),
                            "epoch": epoch_done, "history": history, "best_mae": best,
                            "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                            "recipe": recipe.to_dict(), "partial": within}, ckpt_path)

    for epoch in range(start_epoch, tc.epochs):
        t0 = time.time()
        # Dropout and any other torch draw of this epoch depend on (seed, epoch, process) only;
        # the process term is 0 for one process, whose draws stay as they always were.
        torch.manual_seed(tc.seed * 1_000_003 + epoch + rank * 100_000_007)
        skip, totals, count, rng_state = 0, {}, 0, None
        if partial is not None and partial["epoch"] == epoch:
            # Within an epoch: the same items and the same random draws as if never stopped.
            skip, totals, count = partial["step"], dict(partial["totals"]), partial["count"]
            t0 -= partial["seconds"]
            rng_state = partial["torch_rng"]
        partial = None
        task.on_epoch_start(epoch, networks)
        # After on_epoch_start: a patch dataset draws new (image, patch) items each epoch, and
        # a label-aware sampler must weigh this epoch's items, not the first epoch's.
        sampler = make_sampler(tc.sampler, len(train_ds), tc.seed, epoch, task.sampler_labels(),
                               **tc.sampler_options)
        loader = make_loader(train_ds, sampler, batch_size, tc.num_workers, device, skip_steps=skip)
        for net in networks.values():
            net.train()
        it = iter(loader)
        if rng_state is not None:
            # After the loader's iterator has drawn its own seed, as it had when the state was saved.
            torch.set_rng_state(rng_state)
        if progress and main:
            it = tqdm(it, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="batch", leave=False, disable=None,
                      initial=skip, total=skip + len(loader))
        last_save = time.time()
        for step, batch in enumerate(it, start=skip):
            if tc.max_steps_per_epoch is not None and step >= tc.max_steps_per_epoch:
                break
            n = len(next(iter(batch.values())))
            for name, value in train_step(task, train_nets, optimisation, batch,
                                          f" at epoch {epoch + 1} step {step}").items():
                totals[name] = totals.get(name, 0.0) + value * n
            count += n
            if progress and main:
                it.set_postfix(loss=f"{sum(totals.values()) / max(count, 1):.4f}")
            # One process only: its loss totals and random state are the whole epoch's (under
            # torchrun each process holds a share, and a GPU epoch is short anyway).
            if (world == 1 and tc.checkpoint_minutes
                    and time.time() - last_save >= 60 * tc.checkpoint_minutes):
                checkpoint(epoch - 1, {"epoch": epoch, "step": step + 1, "totals": totals,
                                       "count": count, "seconds": time.time() - t0,
                                       "torch_rng": torch.get_rng_state()})
                last_save = time.time()
        # Each process summed the losses of its own share; the epoch's mean is over all shares.
        names = list(optimisation.optimizers)
        *sums, count = distributed.all_reduce_sums([totals.get(k, 0.0) for k in names] + [count], device)
        row: dict = {"epoch": epoch + 1}
        for name, total in zip(names, sums):
            row[_loss_column(name, len(names))] = total / max(count, 1)
        for net in networks.values():
            net.eval()
        # Only the main process validates and the others take its metrics: it holds the
        # weights that are saved (the same on every process; BatchNorm buffers are the main
        # process's, which DDP hands to the others at the next forward pass), so every process
        # then makes the same choice of best epoch, schedule step and early stop, however
        # rounding differs. Validating N times would give no more and use N devices for it.
        metrics = distributed.broadcast_object(task.evaluate(networks) if main else None)
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
                info = {"val_mae" if task.monitor == "val_mae" else task.monitor: best, "epoch": best_epoch,
                        "n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "device": str(device)}
                if world > 1:
                    info["processes"] = world
                task.save_model(model_path, networks, info)
        else:
            bad_epochs += 1
        if task.on_epoch_end(epoch, history, networks):
            optimisation.rebuild()
            train_nets = distributed.wrap(networks, device)  # DDP reduces the parameters it was built with
            log(f"epoch {epoch + 1}: a new training phase begins; optimisers rebuilt")
        if main:
            write_csv(out / METRICS, history)
            checkpoint(epoch)
        shown = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in row.items() if k.startswith("train_loss"))
        mon = "-" if monitored is None else f"{monitored:.2f}"
        log(f"epoch {epoch + 1}/{tc.epochs}: {shown}  {task.monitor} {mon}  lr {row['lr']:.2e}  {row['seconds']}s")
        if tc.early_stopping is not None and bad_epochs >= tc.early_stopping:
            log(f"early stopping: no validation improvement for {bad_epochs} epochs")
            stopped_early = True
            break

    if main:
        plot_training_curves(history, out / "training_curves.png", metrics=task.curves)
        _report(task.finish(model_path, out), report, out)
    distributed.barrier()  # the files exist when fit returns, on every process
    return history, best, best_epoch, stopped_early, model_path, task.monitor

"""``task: segmentation``: hand masks trained by the one loop (:func:`boneage.engine.fit`).

The recipe names a network of :data:`~boneage.models.segmenter.SEGMENTERS` in
``model.name`` (its side in ``model.options.input_size``) and a loss of
:data:`~boneage.segmentation.losses.SEGMENTATION_LOSSES` in ``loss.name``. Images are the
data folder's, masks ``<id>.png`` in ``data.mask_dir`` (default ``<root>/masks``; any non-zero
pixel is hand). Both are squashed to the network's side once, when training starts. The only
augmentation is ``hflip`` (image and mask mirror together). Validation reports the paper's
Dice, after Otsu's threshold on the probability map, as ``val_dice`` (monitored, higher is
better), and ``val_loss``. The model file is an ordinary one whose recipe says
``task: segmentation`` (:func:`~boneage.models.segmenter.load_segmenter`).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from boneage.config import Recipe
from boneage.data.synthetic import make_radiograph
from boneage.engine.check import build_checked, run_checked, run_training_step
from boneage.engine.optim import make_optimizer, make_scheduler
from boneage.engine.tasks import TASKS, Task
from boneage.errors import ConfigError, InputError
from boneage.inference.torch_model import save_model_file
from boneage.io.image import read_image
from boneage.segmentation.background import film_background
from boneage.segmentation.losses import SEGMENTATION_LOSSES
from boneage.models.segmenter import SEGMENTERS, create_segmenter, otsu_mask, probability_maps
from boneage.inference.torch_model import load_segmenter
from boneage.models.unet import dice_score
from boneage.transforms import build_transform
from boneage.transforms.functional import resize

__all__ = ["SegmentationTask", "read_mask", "mask_folder"]


def mask_folder(recipe: Recipe) -> Path:
    """Where a segmentation recipe's masks are: ``data.mask_dir``, else ``<root>/masks``."""
    d = recipe.data
    if d.mask_dir:
        return Path(d.mask_dir)
    if not d.root:
        raise ConfigError("a segmentation recipe needs data.mask_dir (or data.root with a masks/ folder)")
    return Path(d.root) / "masks"


def read_mask(path: str | Path) -> np.ndarray:
    """A mask PNG as uint8 0/1 (any non-zero pixel is hand)."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None:
        raise InputError("mask file not found", path)
    arr = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if arr is None:
        raise InputError("not a readable image (a mask is a grayscale PNG)", path)
    return (arr > 0).astype(np.uint8)


#: The augmentation steps a segmentation recipe may name: each moves image and mask together
#: (``hflip``) or changes the image where the mask says background (``film_background``).
SEGMENTATION_AUGMENTS = ("hflip", "film_background")


def _augmentations(recipe: Recipe) -> tuple[float, dict | None]:
    """``(hflip probability, film_background options with p, or None)`` of the recipe's
    augmentation; anything else is a one-line ConfigError."""
    steps = recipe.augment.steps
    names = [s.get("name") if isinstance(s, dict) else s for s in steps]
    bad = [n for n in names if n not in SEGMENTATION_AUGMENTS]
    if bad or len(set(names)) < len(names):
        raise ConfigError(f"augment.steps: a segmentation recipe allows at most one of each of "
                          f"{', '.join(SEGMENTATION_AUGMENTS)} (image and mask move together), got {names}")
    flip, background = 0.0, None
    for step in steps:
        options = {k: v for k, v in step.items() if k != "name"}
        if step["name"] == "hflip":
            flip = float(build_transform(step).p)
        else:
            background = _film_background_options(options)
    return flip, background


def _film_background_options(options: dict) -> dict:
    """Checked options of a ``film_background`` step (``p`` and :func:`film_background`'s)."""
    allowed = {"p"} | set(list(inspect.signature(film_background).parameters)[3:])
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"augment.steps.film_background: unknown option {unknown[0]!r} "
                          f"(allowed: {', '.join(sorted(allowed))})")
    p = float(options.get("p", 0.5))
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"augment.steps.film_background: p must be in [0, 1], got {p}")
    try:  # the function checks its own ranges: a bad one fails here, not mid-epoch
        film_background(np.zeros((4, 4), np.float32), np.zeros((4, 4)), np.random.default_rng(0),
                        **{k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items() if k != "p"})
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"augment.steps.film_background: {exc}") from None
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items()} | {"p": p}


def _network_side(recipe: Recipe) -> int:
    """The side of the square images the recipe's network reads (``model.options.input_size``,
    else the network's default)."""
    size = recipe.model.options.get("input_size")
    if size is None:
        size = inspect.signature(SEGMENTERS.get(recipe.model.name)).parameters["input_size"].default
    return int(size)


class _MaskDataset(torch.utils.data.Dataset):
    """Images and masks (N, 1, S, S) as float tensors; mirrored together with probability
    ``p`` and given a synthetic film background with ``background["p"]``, drawn from
    (seed, epoch, item) so an epoch's augmentation survives a resume."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, p: float, seed: int,
                 background: dict | None = None):
        self.images, self.masks = torch.from_numpy(images[:, None]), torch.from_numpy(masks[:, None])
        self.p, self.seed, self.epoch = p, seed, 0
        self.background = background

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        x, y = self.images[i], self.masks[i]
        rng = np.random.default_rng((self.seed, self.epoch, i))
        if self.p and rng.random() < self.p:
            x, y = x.flip(-1), y.flip(-1)
        if self.background and rng.random() < self.background["p"]:
            options = {k: v for k, v in self.background.items() if k != "p"}
            x = torch.from_numpy(film_background(x[0].numpy(), y[0].numpy(), rng, **options))[None]
        return {"image": x, "mask": y}


@TASKS.register("segmentation")
class SegmentationTask(Task):
    """One segmentation network, the paper's loss, validation Dice after Otsu."""

    monitor = "val_dice"
    mode = "max"

    @staticmethod
    def check_recipe(recipe: Recipe, train_step: bool = False) -> None:
        """Build the network, loss, optimiser and schedule and push a synthetic radiograph
        and its mask through them (and one step with ``train_step``): one line per mistake."""
        tc = recipe.train
        for key, value in (("train.epochs", tc.epochs), ("train.batch_size", tc.batch_size)):
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if not 0.0 <= recipe.data.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {recipe.data.val_fraction}")
        for key in ("preprocess", "canonical"):
            if getattr(recipe, key):
                raise ConfigError(f"{key}: a segmentation recipe takes images as they are (the network's "
                                  "side is model.options.input_size); leave it empty")
        if recipe.patches is not None:
            raise ConfigError("patches: a segmentation recipe segments whole images")
        _augmentations(recipe)
        net = build_checked("model", lambda: create_segmenter(recipe.model.name, **recipe.model.options))
        loss = build_checked("loss", lambda: SEGMENTATION_LOSSES.create(recipe.loss.name, where="loss",
                                                                 **recipe.loss.options))
        optimizer = build_checked("optim", lambda: make_optimizer(recipe, net.parameters()))
        build_checked("schedule", lambda: make_scheduler(recipe, optimizer))
        sample = make_radiograph(120.0, "M", size=96, seed=0)
        run_checked("model", lambda: probability_maps(net, [sample.image]))
        if train_step:
            side = net.input_size
            x = torch.from_numpy(cv2.resize(sample.image, (side, side)))[None, None].repeat(2, 1, 1, 1)
            y = torch.from_numpy(cv2.resize(sample.mask, (side, side), interpolation=cv2.INTER_NEAREST)
                                 .astype(np.float32))[None, None].repeat(2, 1, 1, 1)
            net.train()

            def step():
                value = loss(net(x), y)
                optimizer.zero_grad()
                value.backward()
                optimizer.step()
                return value
            run_training_step(step)

    def _read(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Images and masks of ``indices``, squashed to the network's side: (N, S, S) each."""
        side, folder = self.side, mask_folder(self.recipe)
        images, masks = [], []
        for i in indices:
            s = self.samples[i]
            image = read_image(s.path).pixels
            mask = read_mask(folder / f"{s.id}.png")
            if mask.shape != image.shape:
                raise InputError(f"mask is {mask.shape[0]}x{mask.shape[1]} but image {s.id} is "
                                 f"{image.shape[0]}x{image.shape[1]}", folder / f"{s.id}.png")
            images.append(resize(image, side))
            # Linear resize then 0.5: the mask's edge lands where the image's does.
            masks.append((resize(mask.astype(np.float32), side) > 0.5).astype(np.float32))
        empty = np.zeros((0, side, side), np.float32)
        return (np.stack(images) if images else empty), (np.stack(masks) if masks else empty)

    def setup(self, samples, train_idx, val_idx, progress):
        self.samples, self.train_idx, self.val_idx = samples, train_idx, val_idx
        self.side = _network_side(self.recipe)
        train_x, train_y = self._read(train_idx)
        self.val_x, self.val_y = self._read(val_idx)
        flip, background = _augmentations(self.recipe)
        self._train_ds = _MaskDataset(train_x, train_y, flip, self.recipe.train.seed, background)
        self.loss_fn = SEGMENTATION_LOSSES.create(self.recipe.loss.name, where="loss", **self.recipe.loss.options)
        # Written out, so reading the stored recipe never asks the bone-age model registry.
        self.recipe = self.recipe.model_copy(deep=True)
        self.recipe.channels, self.recipe.input_mean, self.recipe.input_std = 1, 0.0, 1.0
        return self.recipe

    def train_dataset(self):
        return self._train_ds

    def build_networks(self):
        return {"model": create_segmenter(self.recipe.model.name, **self.recipe.model.options)}

    def training_losses(self, batch, networks):
        with self.autocast():
            logits = networks["model"](self.to_device(batch["image"]))
        yield "model", self.loss_fn(logits.float(), self.to_device(batch["mask"]))

    def evaluate(self, networks):
        if not len(self.val_idx):
            return {}
        return validation_metrics(networks["model"], self.val_x, self.val_y, self.loss_fn, self.device)

    def on_epoch_start(self, epoch, networks):
        self._train_ds.set_epoch(epoch)

    def save_model(self, path, networks, info):
        info = {**info, "val_ids": [self.samples[i].id for i in self.val_idx]}
        save_model_file(path, networks["model"], self.recipe, info=info)

    def finish(self, model_path, out):
        if len(self.val_idx) and model_path.exists():
            net, _ = load_segmenter(model_path, self.device)
            metrics = validation_metrics(net, self.val_x, self.val_y, self.loss_fn, self.device, per_image=True)
            ids = [self.samples[i].id for i in self.val_idx]
            summary = {"val_dice": metrics["val_dice"], "val_loss": metrics["val_loss"],
                       "per_image": dict(zip(ids, metrics["per_image"]))}
            (out / "val_summary.json").write_text(json.dumps(summary, indent=2))


def validation_metrics(net, images: np.ndarray, masks: np.ndarray, loss_fn, device, per_image: bool = False,
                       batch_size: int = 32) -> dict:
    """Mean Dice after Otsu (the paper's eq. 2) and mean loss of ``net`` on (N, S, S) arrays."""
    was_training = net.training
    net.eval()
    dices, losses = [], []
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(images[i:i + batch_size][:, None]).to(device)
                y = torch.from_numpy(masks[i:i + batch_size][:, None]).to(device)
                logits = net(x).float()
                losses.append(float(loss_fn(logits, y)) * len(x))
                for p, t in zip(torch.sigmoid(logits)[:, 0].cpu().numpy(), masks[i:i + batch_size]):
                    dices.append(dice_score(otsu_mask(p), t))
    finally:
        net.train(was_training)
    out = {"val_dice": float(np.mean(dices)), "val_loss": float(sum(losses) / len(images))}
    if per_image:
        out["per_image"] = [float(d) for d in dices]
    return out

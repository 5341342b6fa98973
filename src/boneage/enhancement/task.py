"""The pix2pix enhancement GAN as a task of the one training loop (``task: gan``).

Two networks, two optimisers: each step the discriminator is stepped on a target pair and a
generated pair, then the generator on the adversarial loss plus ``gan.l1_weight`` times its L1
distance to the target (pix2pix; paper section 2.3, equations 8-10, in the non-saturating
form that GANs are trained with in practice). The monitored metric is the validation L1
between G(degraded input) and the target, beside ``val_l1_input``, the L1 of the degraded
input itself: what "no enhancement" scores on the same pairs. The model file is the
generator alone (:func:`boneage.models.enhancer.save_enhancer`), which a bone-age
recipe names as a ``gan_enhance`` preprocessing step.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as TF

from boneage.config import GanConfig, Recipe
from boneage.data.datasets import PreprocessedCache
from boneage.data.synthetic import make_radiograph
from boneage.engine.check import CHECK_IMAGE_SIZE, build_checked, run_checked
from boneage.engine.curves import plot_training_curves
from boneage.engine.optim import make_optimizer, make_scheduler
from boneage.engine.tasks import TASKS, Task
from boneage.models.enhancer import (
    EnhancementGenerator, PairDiscriminator, enhance, enhancer_info, load_enhancer, save_enhancer,
)
from boneage.enhancement.pairs import EnhancementPairs, check_same_size, synthetic_targets
from boneage.errors import ConfigError
from boneage.fileutils import atomic_path
from boneage.inference.modelfile import _portable
from boneage.registry import Registry
from boneage.transforms import build_pipeline

__all__ = ["GanTask", "build_generator", "build_discriminator"]


def build_generator(gan: GanConfig) -> EnhancementGenerator:
    """The generator ``gan.generator`` describes; a bad option is one line naming the key."""
    return _create(EnhancementGenerator, "gan.generator", gan.generator)


def build_discriminator(gan: GanConfig) -> PairDiscriminator:
    """The discriminator ``gan.discriminator`` describes; a bad option is one line naming the key."""
    return _create(PairDiscriminator, "gan.discriminator", gan.discriminator)


def _create(cls, where: str, options: dict):
    # A throwaway registry gives the same option checking and messages as every recipe name.
    reg: Registry = Registry(where)
    reg.add(cls.__name__, cls)
    return reg.create(cls.__name__, where=where, **options)


def _gan(recipe: Recipe) -> GanConfig:
    return recipe.gan if recipe.gan is not None else GanConfig()


@TASKS.register("gan")
class GanTask(Task):
    """pix2pix: generator and discriminator trained on (degraded, original) radiograph pairs."""

    monitor = "val_l1"
    mode = "min"
    curves = ("train_loss_discriminator", "train_loss_generator")

    @classmethod
    def check_recipe(cls, recipe: Recipe, train_step: bool = False) -> None:
        """Build every component and run one synthetic radiograph through the forward passes
        of a training step (``train_step``: and one step of each optimiser): a bad key fails
        in seconds as one line (:func:`boneage.engine.check.check_recipe`)."""
        gan = _gan(recipe)
        for key, value in (("gan.l1_weight", gan.l1_weight), ("gan.synthetic", gan.synthetic)):
            if not value >= 0:
                raise ConfigError(f"{key} must be >= 0, got {value}")
        pre = build_checked("preprocess", lambda: build_pipeline(recipe.preprocess))
        aug = build_checked("augment", lambda: build_pipeline(recipe.augment.steps, recipe.augment.mode))
        degrade = build_checked("gan.degrade", lambda: build_pipeline(gan.degrade))
        gen = build_checked("gan.generator", lambda: build_generator(gan))
        disc = build_checked("gan.discriminator", lambda: build_discriminator(gan))
        opt = build_checked("optim", lambda: make_optimizer(recipe, gen.parameters()))
        build_checked("schedule", lambda: make_scheduler(recipe, opt))
        image = make_radiograph(120.0, "M", size=CHECK_IMAGE_SIZE, seed=0).image
        target = run_checked("preprocess", lambda: pre(image))
        check_same_size([target])
        pairs = EnhancementPairs([target, target], degrade, aug, seed=0)
        batch = run_checked("augment", lambda: torch.utils.data.default_collate([pairs[0], pairs[1]]))
        gen.train(), disc.train()
        with torch.no_grad():
            fake = run_checked("gan.generator", lambda: gen(batch["input"]))
            run_checked("gan.discriminator", lambda: disc(batch["input"], fake))
        if train_step:
            task = cls(recipe, torch.device("cpu"))
            task.l1_weight = float(gan.l1_weight)
            nets = {"generator": gen, "discriminator": disc}
            opts = {name: make_optimizer(recipe, net.parameters()) for name, net in nets.items()}

            def step():
                for name, loss in task.training_losses(batch, nets):
                    if not torch.isfinite(loss):
                        raise ConfigError(f"the recipe's first {name} step gives a non-finite loss ({loss.item()})")
                    opts[name].zero_grad()
                    loss.backward()
                    opts[name].step()
            run_checked("training step", step)

    # -- data ------------------------------------------------------------------------------
    def setup(self, samples, train_idx, val_idx, progress):
        self.recipe = copy.deepcopy(self.recipe)
        if self.recipe.gan is None:  # stored explicitly: the file says what made its pairs
            self.recipe.gan = GanConfig()
        gan, tc = self.recipe.gan, self.recipe.train
        self.samples, self.val_idx = samples, np.asarray(val_idx)
        used = [samples[i] for i in np.concatenate([train_idx, val_idx]).astype(int)]
        cache = PreprocessedCache(used, self.recipe, progress)
        images = [cache.image(i) for i in range(len(cache))]
        shape = check_same_size(images)
        train_targets = images[:len(train_idx)]
        train_targets += synthetic_targets(gan.synthetic, shape, gan.synthetic_seed)
        degrade = build_pipeline(gan.degrade)
        augment = build_pipeline(self.recipe.augment.steps, self.recipe.augment.mode) if self.recipe.augment.steps else None
        self._train = EnhancementPairs(train_targets, degrade, augment, seed=tc.seed)
        # Validation inputs are drawn once, from another seed than any training epoch's.
        self._val = EnhancementPairs(images[len(train_idx):], degrade, None, seed=tc.seed + 7_919)
        self.l1_weight = float(gan.l1_weight)
        return self.recipe

    def train_dataset(self):
        return self._train

    def on_epoch_start(self, epoch, networks):
        self._train.set_epoch(epoch)

    # -- networks and losses ---------------------------------------------------------------
    def build_networks(self):
        gan = _gan(self.recipe)
        return {"discriminator": build_discriminator(gan), "generator": build_generator(gan)}

    def training_losses(self, batch, networks):
        gen, disc = networks["generator"], networks["discriminator"]
        x, y = self.to_device(batch["input"]), self.to_device(batch["target"])
        with self.autocast():
            fake = gen(x)
            real_logit, fake_logit = disc(x, y), disc(x, fake.detach())
        ones, zeros = torch.ones_like(real_logit.float()), torch.zeros_like(real_logit.float())
        # D: maximise log D(x, y) + log(1 - D(x, G(x))), i.e. minimise the two BCE terms.
        d_loss = 0.5 * (TF.binary_cross_entropy_with_logits(real_logit.float(), ones)
                        + TF.binary_cross_entropy_with_logits(fake_logit.float(), zeros))
        yield "discriminator", d_loss
        # G, against the discriminator just stepped: fool it (-log D(x, G(x))) and stay near y.
        with self.autocast():
            fooled = disc(x, fake)
        g_loss = (TF.binary_cross_entropy_with_logits(fooled.float(), ones)
                  + self.l1_weight * TF.l1_loss(fake.float(), y.float()))
        yield "generator", g_loss

    def evaluate(self, networks):
        if not len(self._val):
            return {}
        gen = networks["generator"]
        gen_l1 = input_l1 = 0.0
        bs = self.recipe.train.batch_size
        with torch.no_grad():
            for start in range(0, len(self._val), bs):
                items = [self._val[i] for i in range(start, min(start + bs, len(self._val)))]
                batch = torch.utils.data.default_collate(items)
                x, y = batch["input"].to(self.device), batch["target"].to(self.device)
                gen_l1 += float(torch.abs(gen(x) - y).mean(dim=(1, 2, 3)).sum())
                input_l1 += float(torch.abs(x - y).mean(dim=(1, 2, 3)).sum())
        return {"val_l1": gen_l1 / len(self._val), "val_l1_input": input_l1 / len(self._val)}

    # -- output ----------------------------------------------------------------------------
    def save_model(self, path, networks, info):
        recipe, info = _portable(self.recipe, info)
        info = {**info, "recipe": recipe.to_dict(),
                "val_ids": [self.samples[i].id for i in self.val_idx]}
        save_enhancer(networks["generator"], path, info=info)

    def finish(self, model_path, out):
        """Validation examples (degraded input | generated | target) and the L1 curve."""
        if not len(self._val) or not Path(model_path).exists():
            return
        gen = load_enhancer(model_path)
        rows = []
        for i in range(min(6, len(self._val))):
            x, y = self._val.pair(i)
            rows.append(np.concatenate([x, enhance(gen, x), y], axis=1))
        mosaic = np.round(np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).astype(np.uint8)
        ok, buf = cv2.imencode(".png", mosaic)
        if ok:
            with atomic_path(out / "val_examples.png") as tmp:
                tmp.write_bytes(buf.tobytes())
        info = enhancer_info(model_path)
        history = getattr(self, "_history", [])
        best = next((row for row in history if row.get("epoch") == info.get("epoch")), {})
        summary = {"val_l1": info.get("val_l1"), "val_l1_input": best.get("val_l1_input"),
                   **{k: info.get(k) for k in ("epoch", "n_train", "n_val")}}
        with atomic_path(out / "val_summary.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
        if history:
            plot_training_curves(history, out / "val_l1.png", metrics=("val_l1", "val_l1_input"))

    def on_epoch_end(self, epoch, history, networks):
        self._history = list(history)
        return False

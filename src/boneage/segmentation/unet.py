"""Training the small hand U-Net (:class:`boneage.models.unet.HandUNet`) on synthetic
radiographs and their hand masks: the network the U+S+I ablation's crop runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from boneage.data.synthetic import sample_radiographs
from boneage.models.unet import HandUNet, save_hand_unet
from boneage.segmentation.losses import CEDiceLoss


def train_hand_unet(n_images: int = 64, size: int = 64, epochs: int = 15, seed: int = 0,
                    out: str | Path | None = None, *, base: int = 8, depth: int = 3,
                    batch_size: int = 8, lr: float = 1e-2, nuisance: bool = True) -> HandUNet:
    """Train a :class:`HandUNet` on synthetic radiographs and their hand masks.

    The loss is BCE + soft Dice (:class:`~boneage.segmentation.losses.CEDiceLoss`; Dice keeps
    the hand, a minority of pixels in small hands, from being under-segmented). Everything — data, initialisation, batch order — follows
    ``seed``, and the global torch RNG is left untouched, so the same arguments give the same
    weights on the same machine.

    Args:
        n_images: number of synthetic training radiographs (``sample_radiographs``).
        size: square training side, divisible by ``2 ** depth``.
        epochs: passes over the images.
        seed: seeds the images, the initial weights and the batch order.
        out: if given, the trained model is also saved there (:func:`save_hand_unet`).
        base, depth: network size (see :class:`HandUNet`).
        batch_size, lr: Adam mini-batch size and learning rate.
        nuisance: train on images with acquisition nuisance (markers, rotation, noise...),
            which the crop meets on real films.

    Returns:
        The trained model, in eval mode on CPU.
    """
    if int(n_images) < 1 or int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError(f"n_images, epochs and batch_size must be >= 1, got "
                         f"{n_images}, {epochs}, {batch_size}")
    samples = sample_radiographs(int(n_images), size=int(size), seed=seed, nuisance=nuisance)
    x = torch.from_numpy(np.stack([s.image for s in samples])[:, None].astype(np.float32))
    y = torch.from_numpy(np.stack([s.mask for s in samples])[:, None].astype(np.float32))
    # fork_rng keeps the caller's global torch RNG as it was; devices=[] because training is CPU.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HandUNet(1, base=base, depth=depth, input_size=int(size))
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        steps = int(epochs) * -(-len(x) // int(batch_size))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        loss_fn = CEDiceLoss()
        model.train()
        for _ in range(int(epochs)):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), int(batch_size)):
                idx = order[i:i + int(batch_size)]
                if len(idx) < 2 and len(x) > 1:
                    continue  # BatchNorm cannot normalise a batch of one
                logits = model(x[idx])
                loss = loss_fn(logits, y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    model.eval()
    if out is not None:
        save_hand_unet(model, out)
    return model

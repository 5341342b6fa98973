"""Input-pipeline and model throughput for the patch method, in patches per second.

    python benchmarks/pipeline_throughput.py                  # synthetic 1600x2080 radiographs
    python benchmarks/pipeline_throughput.py --data ../shared/data/rsna-fullres
    python benchmarks/pipeline_throughput.py --models resnet18,inception_v4 --device cuda

Measures, with the full-resolution recipe's preprocessing (crop, resize 500, CLAHE) and
augmentation pool:
1. the one-time cache build (read + preprocess), images/s;
2. the cached pipeline: random patch + augmentation + tensor through a DataLoader, patches/s;
3. the uncached pipeline the paper had (read and preprocess the image for every patch), patches/s;
4. each model's training (forward + backward + Adam step) and inference throughput, patches/s.
Prints a table; figures depend on the machine (state cores / GPU with them).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]


def synthetic_fullres(folder: Path, n: int) -> Path:
    """n synthetic radiographs at the RSNA full resolution, as PNG files with labels."""
    import cv2

    from boneage.data.synthetic import make_radiograph

    (folder / "images").mkdir(parents=True)
    rows = ["id,boneage,male"]
    for i in range(n):
        r = make_radiograph(12.0 + 10 * i, "M" if i % 2 else "F", size=(2080, 1600), seed=i)
        cv2.imwrite(str(folder / "images" / f"{i}.png"), np.round(r.image * 65535).astype(np.uint16))
        rows.append(f"{i},{r.age_months},{r.sex == 'M'}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="labels.csv + images/ folder (default: 16 synthetic full-size images)")
    ap.add_argument("--recipe", default=str(REPO / "configs" / "m2-inception-v4-fullres.yaml"))
    ap.add_argument("--patches", type=int, default=2000, help="patches drawn per pipeline measurement")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--models", default="resnet18,resnet18_cbam,resnet18_channel_attention,inception_v4")
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--steps", type=int, default=3, help="timed batches per model")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from boneage.config import load_recipe
    from boneage.data.datasets import PatchDataset, PreprocessedCache
    from boneage.data.labels import load_samples
    from boneage.models import create_model

    recipe = load_recipe(args.recipe)
    recipe.target.mean, recipe.target.std = 127.0, 41.0
    tmp = tempfile.TemporaryDirectory()
    data = Path(args.data) if args.data else synthetic_fullres(Path(tmp.name) / "set", 16)
    samples = load_samples(data)
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, device {args.device}")
    print(f"data: {len(samples)} images from {data}; recipe {recipe.name}")

    t0 = time.perf_counter()
    cache = PreprocessedCache(samples, recipe)
    t_cache = time.perf_counter() - t0
    print(f"cache build (read + crop + resize + CLAHE): {len(samples) / t_cache:8.1f} images/s")

    recipe.patches.samples_per_epoch = args.patches
    ds = PatchDataset(cache, range(len(samples)), recipe, augment=True, seed=0)
    loader = DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                        persistent_workers=False)
    t0 = time.perf_counter()
    n = sum(b["image"].shape[0] for b in loader)
    cached = n / (time.perf_counter() - t0)
    print(f"cached pipeline (patch + augmentation, {args.workers} workers): {cached:8.1f} patches/s")

    from boneage.io import read_image
    from boneage.transforms import build_pipeline, extract_patches
    pre, aug = build_pipeline(recipe.preprocess), build_pipeline(recipe.augment.steps, recipe.augment.mode)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    k = 40
    for i in range(k):
        img = pre(read_image(samples[i % len(samples)].path).pixels)
        aug(extract_patches(img, recipe.patches.n, recipe.patches.size)[i % recipe.patches.n], rng)
    naive = k / (time.perf_counter() - t0)
    print(f"uncached pipeline (read + preprocess per patch, 1 process): {naive:8.1f} patches/s")

    device = torch.device(args.device)
    size = recipe.patches.size
    print(f"\nmodel throughput at {size}x{size}, batch {args.batch}:")
    print(f"{'model':<16}{'train patches/s':>17}{'inference patches/s':>21}")
    for name in [m for m in args.models.split(",") if m]:
        model = create_model(name, in_chans=recipe.channels).to(device)
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        x = torch.rand(args.batch, recipe.channels, size, size, device=device)
        sex = torch.ones(args.batch, device=device)

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()

        def train_step():
            loss = model(x, sex).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        model.train()
        train_step()
        sync()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            train_step()
        sync()
        tr = args.steps * args.batch / (time.perf_counter() - t0)
        model.eval()
        with torch.no_grad():
            model(x, sex)
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                model(x, sex)
            sync()
        inf = args.steps * args.batch / (time.perf_counter() - t0)
        print(f"{name:<16}{tr:>17.1f}{inf:>21.1f}")
    tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())

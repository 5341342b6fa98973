"""Training throughput of a recipe: images (or patches) per second, loader wait, device.

    python benchmarks/train_throughput.py configs/default-efficientnet-lite0-rsna100.yaml --steps 20
    python benchmarks/train_throughput.py configs/m2-resnet18-rsna100.yaml --device cuda --amp bf16 \\
        --channels-last --num-workers 8 --json
    python benchmarks/train_throughput.py RECIPE train.batch_size=64 --data ../shared/data/rsna-100px

Times exactly what ``boneage train`` trains (``boneage.engine.trainer.prepare``: the recipe's
task, preprocessing cache, augmentation, networks and optimisers, and ``train_step``) on
synthetic radiographs (``boneage.data.synthetic``; no real data needed) or on ``--data``:
``--warmup`` steps first (worker start-up, allocator, cuDNN autotuning), then ``--steps``
timed steps through the recipe's own loader. Reports items per second (patches for a patch
recipe), the median step time, the fraction of the time spent waiting for the loader (near
0: the device never waits for input; near 1: add ``--num-workers``), and the device's name.
Validation is not timed. One process; for several GPUs run ``torchrun ... -m boneage train``
and read its seconds per epoch (docs/training-speed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores visible)"


def _amp(value: str):
    """``--amp`` as the recipe spells ``train.amp``."""
    low = value.lower()
    if low in ("false", "off", "no", "0"):
        return False
    if low in ("true", "on", "yes", "1"):
        return True
    if low in ("bf16", "fp16"):
        return low
    raise argparse.ArgumentTypeError(f"--amp must be false, true, bf16 or fp16, got {value!r}")


def measure(recipe, samples, steps: int, warmup: int) -> dict:
    """Time ``warmup`` + ``steps`` training steps of ``recipe`` on ``samples``."""
    import boneage.evaluation.training  # noqa: F401  (registers every task, as boneage train has them)
    from boneage.engine.trainer import make_loader, prepare, resolve_device, train_step

    tc = recipe.train
    device = resolve_device(tc.device)
    t0 = time.perf_counter()
    task, recipe, networks, optimisation = prepare(recipe, samples, np.arange(len(samples)),
                                                   np.arange(0), device)
    setup_s = time.perf_counter() - t0
    dataset = task.train_dataset()
    n_steps = warmup + steps
    # Draws with replacement: as many steps as asked for, however small the data set.
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=n_steps * tc.batch_size,
                                             generator=torch.Generator().manual_seed(tc.seed))
    loader = make_loader(dataset, sampler, tc.batch_size, tc.num_workers, device)
    for net in networks.values():
        net.train()
    waits, totals, items = [], [], 0
    batches = iter(loader)
    for k in range(n_steps):
        start = time.perf_counter()
        batch = next(batches)
        got = time.perf_counter()
        train_step(task, networks, optimisation, batch, f" at benchmark step {k}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        end = time.perf_counter()
        if k >= warmup:
            waits.append(got - start)
            totals.append(end - start)
            items += len(batch["image"])
    x = batch["image"]
    return {
        "recipe": recipe.name, "model": recipe.model.name, "device": str(device),
        "device_name": device_name(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "num_workers": tc.num_workers,
        "amp": None if task.amp_dtype is None else str(task.amp_dtype).removeprefix("torch."),
        "channels_last": tc.channels_last, "batch_size": tc.batch_size,
        "input": list(x.shape[1:]), "unit": "patches" if recipe.patches is not None else "images",
        "steps": steps, "warmup": warmup, "setup_seconds": round(setup_s, 2),
        "items_per_second": items / sum(totals),
        "step_ms_p50": 1000 * float(np.median(totals)),
        "loader_wait_fraction": sum(waits) / sum(totals),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", metavar="RECIPE")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, as for boneage train")
    ap.add_argument("--data", help="labels.csv + images/ folder (default: synthetic radiographs)")
    ap.add_argument("--images", type=int, default=64, help="images to cache (synthetic ones drawn, or the "
                    "first of --data; steps draw from them with replacement)")
    ap.add_argument("--image-size", type=int, default=128, help="side of the synthetic radiographs (px)")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--device", help="cpu | cuda | cuda:N | auto (default: the recipe's train.device)")
    ap.add_argument("--amp", type=_amp, help="false | true | bf16 | fp16 (default: the recipe's train.amp)")
    ap.add_argument("--channels-last", action="store_true", default=None, help="NHWC memory format")
    ap.add_argument("--num-workers", type=int, help="loader worker processes (default: the recipe's)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: PyTorch's)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.images < 1:
        ap.error("--steps and --images must be >= 1 and --warmup >= 0")

    from boneage.config import load_recipe
    from boneage.data.labels import load_samples
    from boneage.data.synthetic import write_synthetic_dataset
    from boneage.errors import BoneAgeError

    try:
        recipe = load_recipe(args.recipe, args.overrides)
        for key, value in (("device", args.device), ("amp", args.amp), ("channels_last", args.channels_last),
                           ("num_workers", args.num_workers)):
            if value is not None:
                setattr(recipe.train, key, value)
        if args.threads:
            torch.set_num_threads(args.threads)
        with tempfile.TemporaryDirectory() as tmp:
            data = args.data or write_synthetic_dataset(Path(tmp) / "set", args.images,
                                                        size=args.image_size, seed=0)
            samples = load_samples(data, limit=args.images)
            result = measure(recipe, samples, args.steps, args.warmup)
    except BoneAgeError as exc:
        print(f"train_throughput: error: {exc}", file=sys.stderr)
        return 2
    result["data"] = "synthetic" if not args.data else str(args.data)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['recipe']} ({result['model']}, input {'x'.join(map(str, result['input']))}, "
              f"batch {result['batch_size']}) on {result['device']}: {result['device_name']}")
        print(f"  threads {result['threads']}, loader workers {result['num_workers']}, amp {result['amp']}, "
              f"channels_last {result['channels_last']}, torch {result['torch']}")
        print(f"  {result['items_per_second']:.1f} {result['unit']}/s, step p50 {result['step_ms_p50']:.0f} ms, "
              f"loader wait {result['loader_wait_fraction']:.1%} of the time "
              f"({result['steps']} steps after {result['warmup']} warm-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

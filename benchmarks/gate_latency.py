"""What the quality gate costs per prediction, one gate against another, on one thread.

    python benchmarks/gate_latency.py OLD.onnx NEW.onnx [--images DIR] [--n 20] [--repeats 3]

Both files are loaded (onnxruntime, one intra-op thread, or PyTorch set to one thread for a
.safetensors file) and each image of ``--images`` (default: rsna-fullres) is screened by
both, alternating, ``--repeats`` times, so load on the machine falls on both alike. Prints
per file the p50 / p95 of ``Predictor.screen`` (the gate: 8 feature passes and the
classifiers) and of ``Predictor.predict`` (the bone age itself), in ms, decode excluded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from boneage.inference.loader import load_predictor

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--images", type=Path, default=DATA / "rsna-fullres" / "images")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from boneage.errors import QualityRefusal
    from boneage.io import read_image

    predictors = [load_predictor(m, threads=1) for m in args.models]
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[: args.n]
    images = [read_image(p).pixels for p in paths]
    gate_ms = [[] for _ in predictors]
    predict_ms = [[] for _ in predictors]
    for p in predictors:  # warm-up: first-call allocations are not the gate's cost
        p.screen(images[0], force=True)
        p.predict(images[0], "F")
    for _ in range(args.repeats):
        for image in images:
            for i, p in enumerate(predictors):
                t = time.perf_counter()
                try:
                    p.screen(image)
                except QualityRefusal:
                    pass
                gate_ms[i].append(1000 * (time.perf_counter() - t))
                t = time.perf_counter()
                p.predict(image, "F")
                predict_ms[i].append(1000 * (time.perf_counter() - t))
    for m, g, q in zip(args.models, gate_ms, predict_ms):
        print(f"{m.name}: gate p50 {np.percentile(g, 50):.1f} / p95 {np.percentile(g, 95):.1f} ms; "
              f"prediction p50 {np.percentile(q, 50):.1f} / p95 {np.percentile(q, 95):.1f} ms "
              f"({len(g)} runs on {len(images)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

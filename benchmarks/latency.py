"""Inference latency: decode -> bone age per image, PyTorch against onnxruntime.

    python benchmarks/latency.py                       # the bundled model, exported on the fly
    python benchmarks/latency.py --onnx model.onnx --threads 1 2 --json latency.json
    python benchmarks/latency.py --agreement-only      # PyTorch vs ONNX on the held-back images

For each backend (PyTorch, onnxruntime) and thread count, in a fresh process (so peak memory
and thread settings belong to that configuration alone):

* **one image at a time**: read a full-resolution PNG (``--fullres``, read where it lies,
  never copied) and predict its bone age, timed per image, p50 and p95 in ms; twice: the
  prediction alone (``Predictor.predict``: preprocessing, 6 views, aggregation) and the whole
  ``api.predict`` (quality gate with its 8 feature passes, then the prediction);
* **batched**: read ``--n-batch`` 100-px PNGs (``--small``) and predict them in groups of 64
  with ``predict_batch``: images per second, decoding included;
* peak resident memory of the process (``VmHWM``), model loading included.

Before that, the agreement of the two backends on the bundled model's held-back images
(max and mean absolute difference in months over their aggregated bone ages).
Figures depend on the machine and on what else runs on it: state both with them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from boneage.inference.loader import load_predictor
from boneage.inference.predictor import default_model_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
BATCH_IMAGES = 64


def _percentiles(ms: list[float]) -> dict:
    import numpy as np

    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "mean_ms": round(float(a.mean()), 1), "n": len(ms)}


def child(model: str, threads: int, fullres: list[str], small: list[str], sex: str = "M") -> dict:
    """Measure one configuration in this process (see the module doc); returns its figures."""
    from boneage import api
    from boneage.io import read_image

    t0 = time.perf_counter()
    predictor = api.load_predictor(model, threads=threads)
    load_s = time.perf_counter() - t0
    for path in fullres[:3]:  # warm-up: first runs allocate and pick kernels
        api.predict(path, sex, model=predictor, force=True)
    alone, whole = [], []
    for path in fullres:
        t = time.perf_counter()
        pixels = read_image(path).pixels
        predictor.predict(pixels, sex)
        alone.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        api.predict(path, sex, model=predictor, force=True)
        whole.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    done = 0
    for i in range(0, len(small), BATCH_IMAGES):
        group = [read_image(p).pixels for p in small[i:i + BATCH_IMAGES]]
        done += len(predictor.predict_batch(group, [sex] * len(group)))
    batch_s = time.perf_counter() - t
    return {"backend": "onnxruntime" if model.endswith(".onnx") else "pytorch", "threads": threads,
            "load_s": round(load_s, 2),
            "single_predict": _percentiles(alone), "single_api_predict_with_gate": _percentiles(whole),
            "batched_images_per_s": round(done / batch_s, 1), "batched_n": done,
            "peak_rss_mb": round(_peak_rss_kb() / 1024, 1)}


def _peak_rss_kb() -> float:
    """This process's peak resident memory in kB. VmHWM, not ru_maxrss: Linux carries
    ru_maxrss over exec, so a child would report its parent's peak when that was larger."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:  # not Linux
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def agreement(model: str, onnx_path: str, data: Path, limit: int | None) -> dict:
    """PyTorch vs onnxruntime bone ages on the model's held-back images (as ``boneage
    evaluate --holdout`` selects them): max and mean absolute difference in months."""
    import numpy as np

    from boneage.data.datasets import PreprocessedCache
    from boneage.data.labels import load_samples
    from boneage.data.split import holdout_subset

    torch_p, onnx_p = load_predictor(model), load_predictor(onnx_path)
    samples = holdout_subset(load_samples(data, None, None, None), torch_p.recipe.data, torch_p.info)[:limit]
    cache = PreprocessedCache(samples, torch_p.recipe, progress=False)
    images, sexes = [cache.image(k) for k in range(len(samples))], [s.sex for s in samples]
    a = np.array([torch_p.aggregate(v) for v in torch_p.per_view_preprocessed(images, sexes)])
    b = np.array([onnx_p.aggregate(v) for v in onnx_p.per_view_preprocessed(images, sexes)])
    truth = np.array([s.boneage for s in samples])
    diff = np.abs(a - b)
    return {"n": len(samples), "max_abs_months": float(diff.max()), "mean_abs_months": float(diff.mean()),
            "mae_pytorch": float(np.abs(a - truth).mean()), "mae_onnx": float(np.abs(b - truth).mean())}


def pytorch_model(path: str | None) -> str:
    """The PyTorch model file to compare and time: ``path``, or the bundled one. Not
    ``default_model_path()`` alone: that is the ONNX export, which would compare onnxruntime
    with itself and time it twice, once under the name "pytorch"."""
    model = path or str(default_model_path("torch"))
    if model.endswith(".onnx"):
        raise SystemExit(f"--model must be the PyTorch model file (.safetensors), got {model}; "
                         "pass its export with --onnx")
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="PyTorch model file (default: the bundled one)")
    ap.add_argument("--onnx", help="its ONNX export (default: exported now into a temporary folder)")
    ap.add_argument("--fullres", default=str(DATA / "rsna-fullres" / "images"),
                    help="folder of full-resolution PNGs, one at a time")
    ap.add_argument("--small", default=str(DATA / "rsna-100px" / "images"), help="folder of 100-px PNGs, batched")
    ap.add_argument("--holdout-data", default=str(DATA / "rsna-100px"),
                    help="labelled folder for the agreement check (the model's held-back images)")
    ap.add_argument("--n-single", type=int, default=40, help="full-resolution images timed one at a time")
    ap.add_argument("--n-batch", type=int, default=640, help="100-px images predicted in batches")
    ap.add_argument("--n-agreement", type=int, default=None, help="held-back images compared (default: all)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--backends", nargs="+", default=["pytorch", "onnxruntime"], choices=["pytorch", "onnxruntime"])
    ap.add_argument("--agreement-only", action="store_true")
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:  # one configuration, in its own process
        spec = json.loads(args.child)
        print(json.dumps(child(**spec)))
        return 0

    model = pytorch_model(args.model)
    tmp = tempfile.TemporaryDirectory()
    onnx_path = args.onnx
    if onnx_path is None:
        from boneage.inference.onnx_export import export_onnx

        onnx_path = str(export_onnx(model, Path(tmp.name) / "model.onnx"))
    results: dict = {"model": Path(model).name, "cpu_count": os.cpu_count()}
    if not args.skip_agreement:
        results["agreement_holdout"] = agreement(model, onnx_path, Path(args.holdout_data), args.n_agreement)
        print("agreement on held-back images:", json.dumps(results["agreement_holdout"]), flush=True)
    if not args.agreement_only:
        fullres = sorted(str(p) for p in Path(args.fullres).glob("*.png"))[:args.n_single]
        small = sorted(str(p) for p in Path(args.small).glob("*.png"))[:args.n_batch]
        if not fullres or not small:
            raise SystemExit(f"no PNGs in {args.fullres} or {args.small}")
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        runs = []
        for backend in args.backends:
            for threads in args.threads:
                spec = {"model": onnx_path if backend == "onnxruntime" else model, "threads": threads,
                        "fullres": fullres, "small": small}
                out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                                     capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                runs.append(row)
                s, g = row["single_predict"], row["single_api_predict_with_gate"]
                print(f"{row['backend']:12s} threads {threads}: one image p50 {s['p50_ms']} / p95 {s['p95_ms']} ms "
                      f"(with gate {g['p50_ms']} / {g['p95_ms']} ms), batched {row['batched_images_per_s']} images/s, "
                      f"peak RSS {row['peak_rss_mb']} MB, load {row['load_s']} s", flush=True)
        results["runs"] = runs
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    # This checkout's code, not whatever boneage is installed in site-packages.
    sys.path.insert(0, str(REPO / "src"))
    sys.exit(main())

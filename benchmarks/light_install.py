"""The light install's size and import-to-first-prediction time (issue 13).

Makes a fresh virtual environment with no system packages, installs this checkout into it
the way a user would (``pip install -c constraints.txt .``: no PyTorch), then measures

- the environment's size on disk and its largest packages;
- wall time of one ``boneage predict`` process on a synthetic radiograph (start to exit);
- in one process: ``import boneage.api`` time, model load time and the first prediction's
  time (the bundled ONNX model, quality gate included), each best of ``--repeats`` runs.

Needs the package registry (pip downloads the light dependencies). Usage::

    python benchmarks/light_install.py [--venv DIR] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_TIMING = """
import time, json, sys
t0 = time.perf_counter()
from boneage import api
t1 = time.perf_counter()
predictor = api.load_predictor()
t2 = time.perf_counter()
api.predict(sys.argv[1], "F", model=predictor, force=True)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_prediction_s": t3 - t2,
                  "import_to_first_prediction_s": t3 - t0, "torch_imported": "torch" in sys.modules,
                  "model": predictor.info.get("model_sha256", "")[:16]}))
"""


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _largest_packages(site: Path, n: int = 8) -> list[tuple[str, int]]:
    sizes = [(p.name, _dir_size(p)) for p in site.iterdir() if p.is_dir() and not p.name.endswith(".dist-info")]
    return sorted(sizes, key=lambda t: -t[1])[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", help="where to make the environment (default: a temporary folder, removed after)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    venv = Path(args.venv) if args.venv else Path(tempfile.mkdtemp(prefix="boneage-light-")) / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        t = time.perf_counter()
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-cache-dir", "-c",
                        str(REPO / "constraints.txt"), str(REPO)], check=True)
        install_s = time.perf_counter() - t
        site = next((venv / "lib").glob("python*/site-packages"))
        work = Path(tempfile.mkdtemp(prefix="boneage-light-work-"))
        image = work / "hand.png"
        subprocess.run([str(venv / "bin" / "boneage"), "example", str(image), "--force"], check=True,
                       capture_output=True)
        cli = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            subprocess.run([str(venv / "bin" / "boneage"), "predict", str(image), "--sex", "F", "--force"],
                           check=True, capture_output=True)
            cli.append(time.perf_counter() - t)
        runs = [json.loads(subprocess.run([str(py), "-c", _TIMING, str(image)], check=True,
                                          capture_output=True, text=True).stdout)
                for _ in range(args.repeats)]
        best = min(runs, key=lambda r: r["import_to_first_prediction_s"])
        result = {"environment_mb": _dir_size(venv) / 2**20, "install_s": install_s,
                  "largest_packages_mb": {k: v / 2**20 for k, v in _largest_packages(site)},
                  "cli_predict_process_s": min(cli), **best}
        shutil.rmtree(work, ignore_errors=True)
    finally:
        if not args.venv:
            shutil.rmtree(venv.parent, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"environment            {result['environment_mb']:.0f} MB (pip install: {install_s:.0f} s)")
        for name, mb in result["largest_packages_mb"].items():
            print(f"  {name:<22} {mb:.0f} MB")
        print(f"boneage predict        {result['cli_predict_process_s']:.2f} s per process (best of {args.repeats})")
        print(f"import boneage.api     {result['import_s']:.2f} s")
        print(f"load the bundled model {result['load_s']:.2f} s")
        print(f"first prediction       {result['first_prediction_s']:.2f} s (quality gate included)")
        print(f"import to prediction   {result['import_to_first_prediction_s']:.2f} s; "
              f"torch imported: {result['torch_imported']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

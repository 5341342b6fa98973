"""Throughput of ``boneage dicom-node``, end to end: instances per minute from the first C-STORE
to the node until the destination has stored every result (SR and report page).

    python benchmarks/dicom_node.py                      # 1 and 2 workers, 40 instances each
    python benchmarks/dicom_node.py --workers 1 2 4 --instances 100 --size 2048 --markdown

For each worker count: a node in this process (its workers are processes) with a fresh spool,
results going to a stand-in PACS (a pynetdicom Storage SCP in this process that stores
nothing), ``--instances`` synthetic hand radiographs (16-bit CR, ``--size`` pixels high,
forced past the quality gate, which refuses drawings) pushed over ``--associations``
associations at once after two warm-up instances. The node uses the light install's model
(the bundled ONNX export) unless ``--model`` says otherwise, and renders the report page at
its default 120 dpi. Figures depend on the machine: state its cores with them.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
from pynetdicom import AE, AllStoragePresentationContexts, evt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from boneage.data.synthetic import make_radiograph  # noqa: E402
from boneage.dicomnode.node import DicomNode  # noqa: E402
from boneage.dicomnode.settings import resolve_settings  # noqa: E402
from boneage.inference.predictor import default_model_path  # noqa: E402
from boneage.io import write_dicom  # noqa: E402

CR = "1.2.840.10008.5.1.4.1.1.1"


class StandIn:
    """A destination that answers success and records when each SR arrived."""

    def __init__(self):
        self.arrivals: dict[str, float] = {}
        self.objects = 0
        self.lock = threading.Lock()
        ae = AE(ae_title="PACS")
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]

    def _store(self, event):
        ds = event.dataset
        with self.lock:
            self.objects += 1
            if ds.Modality == "SR":
                self.arrivals[ds.StudyInstanceUID] = time.perf_counter()
        return 0x0000


def make_instances(folder: Path, n: int, size: int) -> list[Path]:
    paths = []
    for i in range(n):
        image = make_radiograph(60 + (i * 7) % 120, "MF"[i % 2], size=(size, size * 13 // 16), seed=i).image
        path = write_dicom(folder / f"{i:04d}.dcm", image, sex="MF"[i % 2], birth_date=datetime.date(2012, 1, 1),
                           study_date=datetime.date(2022, 6, 1), patient_id=f"BENCH{i}", overwrite=True)
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CR
        ds.Modality = "CR"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def push(port: int, paths: list[Path]) -> dict[str, float]:
    """C-STORE ``paths`` over one association; {study UID: time its C-STORE was answered}."""
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(CR, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="BONEAGE")
    sent = {}
    try:
        for path in paths:
            ds = pydicom.dcmread(path)
            status = assoc.send_c_store(ds)
            assert status and status.Status == 0, f"C-STORE failed: {status}"
            sent[ds.StudyInstanceUID] = time.perf_counter()
    finally:
        assoc.release()
    return sent


def run(workers: int, paths: list[Path], warmup: list[Path], args, folder: Path) -> dict:
    dest = StandIn()
    settings = resolve_settings(None, {
        "spool": str(folder / f"spool-{workers}"), "destination": f"PACS@127.0.0.1:{dest.port}", "port": "0",
        "workers": str(workers), "force": True, "model": args.model, "threads": str(args.threads)})
    with DicomNode(settings) as node:
        push(node.port, warmup)
        while len(dest.arrivals) < len(warmup):
            time.sleep(0.05)
        dest.arrivals.clear()
        start = time.perf_counter()
        groups = [paths[i::args.associations] for i in range(args.associations)]
        with ThreadPoolExecutor(args.associations) as pool:
            sent = {k: v for part in pool.map(lambda g: push(node.port, g), groups) for k, v in part.items()}
        pushed = time.perf_counter() - start
        while len(dest.arrivals) < len(paths):
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
    dest.server.shutdown()
    latency = [dest.arrivals[s] - sent[s] for s in sent]
    return {"workers": workers, "instances": len(paths), "seconds": elapsed, "push_seconds": pushed,
            "per_minute": 60 * len(paths) / elapsed, "latency_p50": statistics.median(latency),
            "latency_max": max(latency)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--instances", type=int, default=40)
    ap.add_argument("--associations", type=int, default=2)
    ap.add_argument("--size", type=int, default=1024, help="radiograph height in pixels (default 1024)")
    ap.add_argument("--model", default=str(default_model_path("onnx")),
                    help="model file (default: the bundled ONNX model, as on the light install)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per worker's model")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="boneage-node-bench-") as tmp:
        folder = Path(tmp)
        paths = make_instances(folder, args.instances + 2, args.size)
        rows = [run(w, paths[2:], paths[:2], args, folder) for w in args.workers]
    if args.markdown:
        print("| workers | instances | seconds | instances/min | latency p50 (s) | latency max (s) |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['workers']} | {r['instances']} | {r['seconds']:.1f} | {r['per_minute']:.0f} | "
                  f"{r['latency_p50']:.1f} | {r['latency_max']:.1f} |")
    else:
        for r in rows:
            print(f"{r['workers']} worker(s): {r['instances']} instances in {r['seconds']:.1f} s = "
                  f"{r['per_minute']:.0f}/min (pushed in {r['push_seconds']:.1f} s; latency p50 "
                  f"{r['latency_p50']:.1f} s, max {r['latency_max']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load test of the HTTP service: N concurrent clients on loopback against ``boneage serve``.

    python benchmarks/service_load.py                         # 1, 4 and 16 clients, 200 requests each
    python benchmarks/service_load.py --clients 4 --requests 1000 --max-seconds 600
    python benchmarks/service_load.py --workers 2 --threads 1 --heatmap --markdown

Starts the server in a subprocess on a free loopback port (the bundled model unless
``--model``), waits for ``/health``, then for each client count sends ``--requests`` POST
/v1/predict requests of one synthetic radiograph (forced past the quality gate, which refuses
drawings), stopping early after ``--max-seconds``. Prints requests/s, p50/p95/p99 latency,
error counts by status and the server's resident memory (RSS, from /proc) before and after
each level. Figures depend on the machine: state its cores with them.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc; NaN elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def start_server(port: int, args) -> subprocess.Popen:
    """``boneage serve`` in a subprocess (this checkout's src/ first on the path)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, "-m", "boneage", "serve", "--port", str(port), "--threads", str(args.threads)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if args.model:
        cmd += ["--model", args.model]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> float:
    """Seconds until /health answers 200 (the model loaded)."""
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server was not ready within {timeout:.0f} s")


def run_level(url: str, image: bytes, clients: int, requests: int, max_seconds: float, heatmap: bool) -> dict:
    """Send ``requests`` predictions from ``clients`` threads (each with its own connection)."""
    import httpx

    lock = threading.Lock()
    state = {"left": requests}
    latencies: list[float] = []
    statuses: Counter = Counter()
    deadline = time.monotonic() + max_seconds
    data = {"sex": "M", "force": "true", "age_months": "110"}
    if heatmap:
        data["heatmap"] = "true"

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while True:
                with lock:
                    if state["left"] <= 0 or time.monotonic() > deadline:
                        return
                    state["left"] -= 1
                start = time.perf_counter()
                try:
                    r = http.post(f"{url}/v1/predict", files={"file": ("hand.png", image, "image/png")}, data=data)
                    status = r.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                elapsed = time.perf_counter() - start
                with lock:
                    statuses[status] += 1
                    if status == 200:
                        latencies.append(elapsed)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    done = sum(statuses.values())
    return {"clients": clients, "requests": done, "seconds": wall, "rps": done / wall if wall else float("nan"),
            "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "p99": float(np.percentile(lat, 99)),
            "errors": {str(k): v for k, v in statuses.items() if k != 200}}


def main(argv=None) -> int:
    """Run the levels and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=200, help="requests per client count")
    p.add_argument("--max-seconds", type=float, default=300, help="stop a level after this long")
    p.add_argument("--workers", type=int, default=None, help="the server's --workers")
    p.add_argument("--threads", type=int, default=1, help="the server's --threads")
    p.add_argument("--model", help="model file (default: the bundled model)")
    p.add_argument("--size", type=int, default=512, help="side of the synthetic radiograph, pixels")
    p.add_argument("--heatmap", action="store_true", help="ask for the Grad-CAM overlay too")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)

    sys.path.insert(0, str(REPO / "src"))
    from boneage.data.synthetic import write_example_radiograph

    with tempfile.TemporaryDirectory() as tmp:
        image = write_example_radiograph(Path(tmp) / "hand.png", age_months=110, sex="M", size=args.size).read_bytes()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(port, args)
    try:
        ready = wait_ready(url, proc)
        print(f"server ready in {ready:.1f} s (pid {proc.pid}, workers {args.workers or 'default'}, "
              f"threads {args.threads}); image {args.size} px, {len(image) / 1024:.0f} KiB; "
              f"{os.cpu_count()} cores", flush=True)
        rows = []
        for clients in args.clients:
            before = rss_mib(proc.pid)
            row = run_level(url, image, clients, args.requests, args.max_seconds, args.heatmap)
            row["rss_before"], row["rss_after"] = before, rss_mib(proc.pid)
            rows.append(row)
            print(f"{clients:>3} clients: {row['requests']} requests in {row['seconds']:.1f} s, "
                  f"{row['rps']:.2f} req/s, p50 {row['p50']:.0f} ms, p95 {row['p95']:.0f} ms, "
                  f"p99 {row['p99']:.0f} ms, errors {row['errors'] or 0}, "
                  f"RSS {row['rss_before']:.0f} -> {row['rss_after']:.0f} MiB", flush=True)
        if args.markdown:
            print("\n| clients | requests | req/s | p50 ms | p95 ms | p99 ms | errors | RSS before → after (MiB) |")
            print("| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
            for r in rows:
                errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
                print(f"| {r['clients']} | {r['requests']} | {r['rps']:.2f} | {r['p50']:.0f} | {r['p95']:.0f} | "
                      f"{r['p99']:.0f} | {errors} | {r['rss_before']:.0f} → {r['rss_after']:.0f} |")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

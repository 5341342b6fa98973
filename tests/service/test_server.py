"""The service on a real uvicorn server on a loopback port: a body that never finishes, an
over-limit Content-Length before any body, and concurrent predictions on the one model."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor


def _raw(port: int, request: bytes, wait: float = 10.0) -> bytes:
    """Send ``request`` and return what the server answers before closing (or ``wait`` s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(request)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data and b'"detail"' in data:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return data


def test_a_body_that_never_finishes_is_cut_off(server):
    import httpx

    url, port = server
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
            b"Content-Length: 5000\r\n\r\n--B\r\nContent-Disposition: form-data; name=\"sex\"\r\n\r\nM")
    start = time.monotonic()
    answer = _raw(port, head)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"stopped arriving" in answer and time.monotonic() - start < 8
    assert httpx.get(f"{url}/health").status_code == 200


def test_over_limit_content_length_is_refused_before_the_body(server):
    import httpx

    url, port = server
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
            b"Content-Length: 999999999\r\n\r\n")
    answer = _raw(port, head)  # no body sent at all: the answer must not wait for it
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert httpx.get(f"{url}/health").status_code == 200


def test_concurrent_predictions_agree(server, png_bytes):
    import httpx

    url, _ = server

    def one(_):
        r = httpx.post(f"{url}/v1/predict", files={"file": ("h.png", png_bytes, "image/png")},
                       data={"sex": "M", "force": "true"}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["bone_age_months"]

    with ThreadPoolExecutor(6) as pool:
        ages = list(pool.map(one, range(6)))
    assert max(ages) - min(ages) < 1e-3  # one shared model, no cross-talk between requests

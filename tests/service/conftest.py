"""Fixtures of the HTTP service tests: one loaded bundled model, one app, synthetic images."""

from __future__ import annotations

import socket
import threading
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service needs fastapi (pip install fastapi uvicorn python-multipart httpx)")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

#: Small, so that the over-the-limit tests send little.
LIMIT = 2 * 2**20


@pytest.fixture(scope="package")
def predictor():
    from boneage import api

    return api.load_predictor()


@pytest.fixture(scope="package")
def app(predictor):
    from boneage.service import create_app

    return create_app(predictor, max_upload_bytes=LIMIT, workers=2)


@pytest.fixture(scope="package")
def client(app):
    from fastapi.testclient import TestClient

    # raise_server_exceptions=False: a bug must show as the 500 a client would get.
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="package")
def png_bytes() -> bytes:
    """A generated MR-like slice, 256 x 256: an image the bundled model's quality gate refuses
    whatever model is bundled (the project's synthetic hand drawings are accepted by some
    gates and refused by others), so the tests of forcing and refusal hold."""
    from boneage.data.negatives import negative_image

    image = negative_image("other_modality/mr", 3, size=(256, 256))
    return cv2.imencode(".png", np.round(image * 255).astype(np.uint8))[1].tobytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="package")
def server(predictor):
    """The app (bundled model, 1 MiB limit, 1 s body timeout) on uvicorn on a free loopback
    port, in a thread: ``(base url, port)``."""
    import uvicorn

    from boneage.service import create_app

    app = create_app(predictor, max_upload_bytes=2**20, workers=2, body_timeout=1.0)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        access_log=False, lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline:
            pytest.fail("uvicorn did not start within 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", port
    srv.should_exit = True
    thread.join(10)

"""Running the service on uvicorn, with logging that carries no patient data."""

from __future__ import annotations

import logging

from boneage.service.app import DEFAULT_MAX_UPLOAD_BYTES, create_app

#: uvicorn's own access log would print the request line with its query string; the app
#: logs its own access lines instead (path only), so uvicorn's is switched off.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                            "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        "boneage.service": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def serve(*, host: str = "127.0.0.1", port: int = 8000, model=None, workers: int | None = None,
          threads: int = 1, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
          body_timeout: float = 30.0) -> None:
    """Run the service until interrupted (one process; ``workers`` predictions at once,
    each on ``threads`` CPU threads). Arguments as for :func:`create_app`."""
    import uvicorn

    app = create_app(model, max_upload_bytes=max_upload_bytes, workers=workers, threads=threads,
                     body_timeout=body_timeout)
    # One process holds the one model; the concurrency is the app's bounded thread pool.
    uvicorn.run(app, host=host, port=port, log_config=LOG_CONFIG, access_log=False,
                server_header=False, timeout_keep_alive=5)
    logging.getLogger("boneage.service").info("stopped")

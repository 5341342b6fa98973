"""``boneage serve``: the HTTP service and its web page (see :mod:`boneage.service`).

One of the commands of the light install (no PyTorch). :func:`add_arguments` fills its
parser, :func:`run` runs it (:mod:`boneage.cli.main` dispatches to both).
"""

from __future__ import annotations

import argparse

from boneage.cli.common import positive_int
from boneage.inference import read_model_metadata
from boneage.service.app import DEFAULT_MAX_UPLOAD_BYTES
from boneage.service.server import serve


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {value}")
    return value


def _megabytes(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of MiB, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return int(value * 2**20)


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``serve`` to its parser ``s``."""
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for the whole network)")
    s.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000)")
    s.add_argument("--model", help="model file (default: the bundled model)")
    s.add_argument("--workers", type=positive_int, default=None,
                   help="predictions run at once; more requests wait (default: cores, at most 4)")
    s.add_argument("--threads", type=positive_int, default=1,
                   help="CPU threads per prediction (default 1)")
    s.add_argument("--max-upload-mb", type=_megabytes, default=None, metavar="MIB",
                   help="largest request accepted, in MiB (default 64)")


def run(args: argparse.Namespace) -> int:
    """Check the model file, then serve until interrupted; 0 on a clean stop."""
    if args.model is not None:
        read_model_metadata(args.model)  # a wrong path fails here, in one line, not in the server
    serve(host=args.host, port=args.port, model=args.model, workers=args.workers, threads=args.threads,
          max_upload_bytes=args.max_upload_mb or DEFAULT_MAX_UPLOAD_BYTES)
    return 0

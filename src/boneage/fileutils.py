"""Writing files so that an interruption never leaves a half-written one behind."""

from __future__ import annotations

import hashlib
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from boneage.errors import InputError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary file lives in the same folder because ``os.replace`` is atomic only within
    one filesystem; its leading dot keeps it out of globs such as ``*.png`` meanwhile.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield tmp
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_safetensors_metadata(path: str | os.PathLike, what: str) -> dict[str, str]:
    """Header metadata of a safetensors file; a missing or corrupt file is an InputError.

    ``what`` names the kind of file in the messages ("model file", "hand U-Net weights file").
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise InputError(f"not a safetensors {what} ({exc})", path) from None


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, as hex: the identity of a model file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

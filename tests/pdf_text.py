"""The text of the PDFs boneage writes (matplotlib's PDF backend), for tests.

matplotlib writes each text as a ``[(B) 0.1 (o) ...] TJ`` array in a deflated content stream.
This reads those strings back: enough to check what a report says, with no PDF library.
Characters outside ASCII come back as their font codes, so tests look for ASCII phrases.
"""

from __future__ import annotations

import re
import zlib

_STREAM = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.S)
_BLOCK = re.compile(rb"\bBT\b(.*?)\bET\b", re.S)
_SHOW = re.compile(rb"\[(.*?)\]\s*TJ|(\((?:\\.|[^\\)])*\))\s*Tj", re.S)
_STRING = re.compile(rb"\(((?:\\.|[^\\)])*)\)", re.S)
_ESCAPE = re.compile(rb"\\([0-7]{1,3}|.)", re.S)
_NAMED = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def _unescape(raw: bytes) -> bytes:
    def one(m: re.Match) -> bytes:
        code = m.group(1)
        return bytes([int(code, 8) & 0xFF]) if code[:1].isdigit() else _NAMED.get(code, code)

    return _ESCAPE.sub(one, raw)


def pdf_text(data: bytes) -> str:
    """Every text shown on the PDF's pages: one text object (``BT`` ... ``ET``, one call of
    ``fig.text``) after another, a space between them, whitespace collapsed."""
    shown = []
    for stream in _STREAM.finditer(data):
        try:
            content = zlib.decompress(stream.group(1))
        except zlib.error:
            continue  # an image or font program, not page content
        for block in _BLOCK.finditer(content):
            # A text object switches fonts for glyphs outside the first one (a dash, "×"):
            # its pieces are one text.
            strings = [s for show in _SHOW.finditer(block.group(1))
                       for s in _STRING.findall(show.group(1) or show.group(2))]
            shown.append(b"".join(_unescape(s) for s in strings).decode("latin-1"))
    return " ".join(" ".join(shown).split())

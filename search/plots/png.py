"""PNG files that carry the numbers they draw: written with a ``tEXt`` chunk, read back by tests.

The numbers each plot draws are written into the PNG itself (keyword ``DATA_KEY``), read off
the drawn artists, so a test can check what the picture shows without image analysis.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_KEY = "search.plot"  # the PNG tEXt keyword holding the plotted numbers (JSON)


def save_png(figure: Any, path: str | Path, data: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, metadata={DATA_KEY: json.dumps(data, default=str), "Software": "search"})
    return path


def plot_data(path: str | Path) -> dict[str, Any]:
    """The numbers a plot of this module drew, read back from its PNG."""
    for keyword, text in png_text(path).items():
        if keyword == DATA_KEY:
            return json.loads(text)
    raise ValueError(f"{path} holds no {DATA_KEY} data; was it written by search.plots?")


def png_text(path: str | Path) -> dict[str, str]:
    """The ``tEXt``/``zTXt``/``iTXt`` chunks of a PNG; a ``ValueError`` if it is not a whole PNG."""
    raw = Path(path).read_bytes()
    if not raw.startswith(PNG_MAGIC):
        raise ValueError(f"{path} is not a PNG file")
    out: dict[str, str] = {}
    at, seen_end = len(PNG_MAGIC), False
    while at + 8 <= len(raw):
        (length,) = struct.unpack(">I", raw[at : at + 4])
        kind, body = raw[at + 4 : at + 8], raw[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", raw[at + 8 + length : at + 12 + length] or b"\0\0\0\0")
        if len(body) != length or zlib.crc32(kind + body) != crc:
            raise ValueError(f"{path}: chunk {kind!r} is truncated or corrupt")
        if kind == b"tEXt":
            keyword, _, text = body.partition(b"\0")
            out[keyword.decode("latin-1")] = text.decode("latin-1")
        elif kind == b"zTXt":
            keyword, _, rest = body.partition(b"\0")
            out[keyword.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"iTXt":
            keyword, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _translated, _, text = rest.partition(b"\0")
            out[keyword.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode("utf-8")
        elif kind == b"IEND":
            seen_end = True
            break
        at += 12 + length
    if not seen_end:
        raise ValueError(f"{path}: no IEND chunk; the PNG is truncated")
    return out

"""Byte sizes, read and written one way everywhere: binary units, as memory is sold and allocated.

The bottom layer (no localrag imports): the fit, the store, the views and the file filters all
show sizes through ``format_size`` and read them through ``parse_size``.
"""

from __future__ import annotations

import re

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4


def format_size(n: int | float) -> str:
    """Bytes -> "4.4 GiB" / "512.0 MiB" / "17 B"."""
    n = float(n)
    for unit, scale in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def parse_size(text: str) -> int:
    """"8GiB", "16GB", "1.5TiB", "512 MiB", "8g", "1024" (bytes) -> bytes; ValueError otherwise.

    GB and GiB are both read as powers of 1024: people say "16 GB" for a 16 GiB card, and planning
    for slightly more memory than is there would be the wrong way to err.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", text or "", re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 8GiB, 16GB, 1.5TiB)")
    number, unit = float(match.group(1)), match.group(2).lower()
    if not unit and match.group(3):
        if match.group(3).lower() != "b":  # "8i", "8ib"
            raise ValueError(f"not a size: {text!r} (use e.g. 8GiB, 16GB, 1.5TiB)")
    value = number * 1024 ** "_kmgt".index(unit) if unit else number
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return int(value)

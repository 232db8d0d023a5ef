"""Sizes in words, one way everywhere: decimal units (1 GB = 10^9 bytes), as the Hub and file
managers show them, so "4.92 GB" here is the size a person sees next to the file on the Hub.

Also parses sizes typed by people: ``8 GB`` means 8 x 10^9 bytes (as shown everywhere), while a
bare letter (``12G``, as in ``docker --memory`` and llama.cpp's flags) and ``GiB`` mean powers of
1024 -- memory is sold and reported in those.
"""

from __future__ import annotations

import re

_UNITS = ("B", "KB", "MB", "GB", "TB")
_SIZE_RE = re.compile(r"\s*([\d.]+)\s*([KMGT]?)(i?)(B?)\s*", re.IGNORECASE)


def human_bytes(n: float) -> str:
    """``532 B``, ``12.3 MB``, ``4.92 GB`` (decimal units; three significant figures above 1 KB)."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1000 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{value:.0f} B"
            return f"{value:.2f} {unit}" if abs(value) < 10 else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def parse_size(text: str) -> int:
    """Bytes from ``12G``, ``12GB``, ``12GiB``, ``512M`` or plain digits (ValueError otherwise)."""
    m = _SIZE_RE.fullmatch(text)
    if not m or m.group(1).count(".") > 1:
        raise ValueError(f"not a size: {text!r} (use bytes, or e.g. 12G, 512M, 8GiB)")
    prefix = m.group(2).upper()
    base = 1000 if m.group(4) and not m.group(3) else 1024
    return int(float(m.group(1)) * base ** "BKMGT".index(prefix or "B"))

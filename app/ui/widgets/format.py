"""Numbers in words for the pages: sizes, speeds, durations (one place, so every page agrees)."""

from __future__ import annotations

from app.core.units import human_bytes

__all__ = ["human_bytes", "human_duration", "human_speed", "human_count"]


def human_speed(bytes_per_s: float) -> str:
    """``12.3 MB/s``; a dash before the first measurement."""
    if bytes_per_s <= 0:
        return "–"
    return f"{human_bytes(bytes_per_s)}/s"


def human_duration(seconds: float | None) -> str:
    """``4 s``, ``3 min 05 s``, ``2 h 10 min``; a dash when unknown."""
    if seconds is None or seconds < 0 or seconds != seconds or seconds == float("inf"):
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def human_count(n: int) -> str:
    """Context sizes and token counts: ``4096`` -> ``4K``, ``131072`` -> ``128K``."""
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}K"
    return f"{n:,}"

"""Plain helpers of the Chat page: which models to offer, stats in words.

Nothing here touches Qt.  Planning a load is the core's (``app.core.planning.Planner.plan_load``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.core.settings import Settings


def model_choices(settings: Settings) -> list[tuple[str, str]]:
    """(label, path) of every model in the library whose files are present, for the picker."""
    from app.core.library import Library

    try:
        models = Library(folder=settings.library_path()).list()
    except Exception:  # a damaged index must not break the page; the Library page says why
        return []
    return [(f"{m.name}  ·  {m.quant}", str(m.path)) for m in models if m.present]


def stats_words(stats: dict[str, Any]) -> str:
    """``42 tokens · 31.0 tok/s · first token 120 ms`` (and why it stopped, when not normal)."""
    parts = [
        f"{int(stats.get('tokens', 0))} tokens",
        f"{float(stats.get('gen_tok_s', 0.0)):.1f} tok/s",
        f"first token {float(stats.get('ttft_s', 0.0)) * 1000:.0f} ms",
    ]
    if stats.get("reasoning_tokens"):  # part of the tokens above, spent in the <think> block
        parts.insert(1, f"{int(stats['reasoning_tokens'])} thinking")
    reason = stats.get("stop_reason")
    if reason == "cancelled":
        parts.append("stopped")
    elif reason in ("length", "context"):
        parts.append(f"cut at the {'token limit' if reason == 'length' else 'context size'}")
    return " · ".join(parts)


def model_label(path: str | Path) -> str:
    return Path(path).name

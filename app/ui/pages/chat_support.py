"""Plain helpers of the Chat page: which models to offer, how to load one, stats in words.

Nothing here touches Qt, so the functions run in background tasks (``plan_load`` reads a header and
plans memory: never on the GUI thread).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.settings import Settings


@dataclass(frozen=True)
class LoadPlan:
    """How to load a model: context size, GPU layers, and why."""

    n_ctx: int
    n_gpu_layers: int
    reason: str
    verdict: str = ""


def model_choices(settings: Settings) -> list[tuple[str, str]]:
    """(label, path) of every model in the library whose files are present, for the picker."""
    from app.core.library import Library

    try:
        models = Library(folder=settings.library_path()).list()
    except Exception:  # a damaged index must not break the page; the Library page says why
        return []
    return [(f"{m.name}  ·  {m.quant}", str(m.path)) for m in models if m.present]


def plan_load(path: str, default_ctx: int, profile: Any, engine: Any = None) -> LoadPlan:
    """Context and GPU layers for ``path`` from this machine's memory plan (off the GUI thread).

    The context is the default one (or the model's trained context when smaller); the planner
    offloads as many layers as fit the GPU budget.  When that context does not fit, the largest
    one that does is taken; when nothing fits, :class:`PlanError` says why.  The dry runs use
    ``engine`` (the chat's own process) when given, so planning starts no extra process.
    """
    from app.core.dryrun import DryRunner
    from app.core.fit import plan_offload
    from app.core.gguf_header import read_spec
    from app.core.recommend import budget_for

    spec = read_spec(path)
    want = max(256, min(default_ctx, int(spec.n_ctx_train or default_ctx)))
    budget = budget_for(profile)
    runner = DryRunner(engine=engine)
    try:
        fn = runner.dry_fn(path, spec, gpu_build=profile.gpu_build)
        offload = plan_offload(spec, budget, fn, want)
        n_ctx, reason = want, offload.reason
        if offload.verdict == "no_fit":
            if offload.max_ctx < 256:
                raise PlanError(
                    f"{Path(path).name} does not fit this machine: {offload.reason}. "
                    "Untick Auto fit to try your own context and GPU layers anyway."
                )
            n_ctx = offload.max_ctx
            offload = plan_offload(spec, budget, fn, n_ctx)
            reason = f"context shortened to {n_ctx} tokens to fit; {offload.reason}"
    finally:
        runner.close()
    return LoadPlan(n_ctx, offload.plan.n_gpu_layers, reason, offload.verdict)


class PlanError(Exception):
    """The model cannot be loaded on this machine as planned (the message says why)."""


def stats_words(stats: dict[str, Any]) -> str:
    """``42 tokens · 31.0 tok/s · first token 120 ms`` (and why it stopped, when not normal)."""
    parts = [
        f"{int(stats.get('tokens', 0))} tokens",
        f"{float(stats.get('gen_tok_s', 0.0)):.1f} tok/s",
        f"first token {float(stats.get('ttft_s', 0.0)) * 1000:.0f} ms",
    ]
    reason = stats.get("stop_reason")
    if reason == "cancelled":
        parts.append("stopped")
    elif reason in ("length", "context"):
        parts.append(f"cut at the {'token limit' if reason == 'length' else 'context size'}")
    return " · ".join(parts)


def model_label(path: str | Path) -> str:
    return Path(path).name

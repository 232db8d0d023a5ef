"""Which variant of a model to take on this machine: a verdict per variant and one recommendation.

Policy (issue 3): the highest-quality variant that runs fully in fast memory (VRAM, or unified
memory on a Mac) at the chosen context; never below Q4 when a Q4 or better fits anywhere; Q2/Q3
variants carry a quality warning; when a better quant fits with partial offload, say so and offer
it as the alternative.  Quality is ranked by bits per weight computed from the header.  On a machine
without a usable GPU, variants above ~6.6 bits per weight (Q8_0, F16) are not recommended: on a CPU
their speed halves for a quality gain that published KL-divergence figures show to be negligible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.fit import (
    DEFAULT_VRAM_MARGIN,
    UNIFIED_VRAM_MARGIN,
    Budget,
    DryRunFn,
    OffloadPlan,
    plan_offload,
)
from app.core.gguf_header import ModelSpec
from app.core.hardware import HardwareProfile
from app.core.speed import SpeedRule

LOW_QUALITY_BPW = 4.0  # Q3_K_M is ~3.9 bpw, Q4_0 4.5, Q4_K_M ~4.9
CPU_QUALITY_CAP_BPW = 6.7  # Q6_K is ~6.56 bpw; Q8_0 8.5
_LOW_LABELS = ("Q2", "Q3", "IQ1", "IQ2", "IQ3", "TQ1", "TQ2")


def budget_for(
    profile: HardwareProfile | None,
    ram_bytes: int | None = None,
    vram_bytes: int | None = None,
) -> Budget:
    """The budget of this machine, or a what-if one: explicit figures override detection."""
    unified = False
    ram = ram_bytes
    vram = vram_bytes
    if profile is not None:
        gpus = profile.usable_gpus()
        unified = any(g.unified for g in gpus)
        if ram is None:
            # Unified memory: the GPU's share is counted with RAM, so plan against all of it.
            ram = profile.ram_total_bytes if unified else profile.ram_available_bytes
        if vram is None:
            # One GPU: llama.cpp can split across several, the plan here stays on the largest.
            vram = max((g.free_bytes for g in gpus), default=0)
    return Budget(
        ram_bytes=int(ram or 0),
        vram_bytes=int(vram or 0),
        unified=unified,
        vram_margin=UNIFIED_VRAM_MARGIN if unified else DEFAULT_VRAM_MARGIN,
    )


@dataclass
class VariantFit:
    """One variant's verdict under a budget."""

    file: str
    quant: str
    size_bytes: int
    bits_per_weight: float
    offload: OffloadPlan
    warning: str = ""

    @property
    def verdict(self) -> str:
        return self.offload.verdict

    @property
    def low_quality(self) -> bool:
        return is_low_quality(self.quant, self.bits_per_weight)

    def to_json(self) -> dict[str, Any]:
        p = self.offload.plan
        return {
            "file": self.file,
            "quant": self.quant,
            "size_bytes": self.size_bytes,
            "bits_per_weight": round(self.bits_per_weight, 3),
            "verdict": self.verdict,
            "n_gpu_layers": p.n_gpu_layers,
            "n_layers_total": p.n_layers_total,
            "ram_bytes": p.ram_bytes,
            "vram_bytes": p.vram_bytes,
            "max_ctx": self.offload.max_ctx,
            "reason": self.offload.reason,
            "warning": self.warning,
        }


@dataclass
class Recommendation:
    variants: list[VariantFit]
    recommended: VariantFit | None
    reason: str
    alternative: VariantFit | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "variants": [v.to_json() for v in self.variants],
            "recommended": self.recommended.file if self.recommended else None,
            "reason": self.reason,
            "alternative": self.alternative.file if self.alternative else None,
            "notes": self.notes,
        }


def is_low_quality(quant: str, bpw: float) -> bool:
    return bpw < LOW_QUALITY_BPW or quant.upper().startswith(_LOW_LABELS)


def fit_variant(
    file: str,
    spec: ModelSpec,
    dry_fn: DryRunFn,
    budget: Budget,
    n_ctx: int,
    type_k: str = "f16",
    type_v: str = "f16",
) -> VariantFit:
    offload = plan_offload(spec, budget, dry_fn, n_ctx, type_k, type_v)
    size = sum(spec.file_sizes) or spec.data_offset + spec.weights_bytes
    fit = VariantFit(file, spec.quant, size, spec.bits_per_weight, offload)
    if fit.low_quality:
        fit.warning = (
            f"{spec.quant} ({spec.bits_per_weight:.1f} bits per weight) loses noticeable quality; "
            "prefer Q4 or better when it fits"
        )
    return fit


def recommend(
    variants: list[VariantFit], budget: Budget, speed: SpeedRule | None = None
) -> Recommendation:
    """Pick one variant (see the module docstring for the policy) and say why in plain words.

    With ``speed`` the rule is the one a person sets in Settings: the highest quality that fits
    with headroom and writes at least ``speed.min_tok_s`` tokens/s (estimated from the bytes read
    per token and the measured memory bandwidth); it replaces the fixed CPU quality cap.
    """
    ranked = sorted(variants, key=lambda v: v.bits_per_weight, reverse=True)
    running = [v for v in ranked if v.verdict != "no_fit"]
    if running and speed is not None:
        return _recommend_by_speed(ranked, running, speed)
    if not running:
        smallest = min(ranked, key=lambda v: v.offload.plan.ram_bytes, default=None)
        reason = "no variant fits this machine at the chosen context"
        if smallest and smallest.offload.max_ctx:
            reason += (
                f"; {smallest.quant} would run with a context of {smallest.offload.max_ctx} tokens"
            )
        return Recommendation(ranked, None, reason)
    good = [v for v in running if not v.low_quality]
    gpu = bool(budget.vram_usable)
    full = [v for v in running if v.verdict == "full_gpu"]
    alternative = None
    if gpu and full and (not full[0].low_quality or not good):
        pick = full[0]
        where = "unified memory" if budget.unified else "VRAM"
        reason = (
            f"{pick.quant} is the highest-quality variant that runs entirely in {where} "
            f"({pick.bits_per_weight:.2f} bits per weight)"
        )
        better = [v for v in good if v.bits_per_weight > pick.bits_per_weight]
        if better:
            alternative = better[0]
            a = alternative.offload.plan
            reason += (
                f"; {alternative.quant} is better quality and runs with {a.n_gpu_layers} of "
                f"{a.n_layers_total} layers on the GPU, but slower (the rest on the CPU)"
            )
    else:
        pool = good or running
        if not gpu:
            capped = [v for v in pool if v.bits_per_weight <= CPU_QUALITY_CAP_BPW]
            pool = capped or pool[-1:]
        pick = pool[0]
        partial = [v for v in pool if v.verdict == "partial_gpu"]
        if gpu and partial:
            # Speed follows the share of layers on the GPU: F16 with a quarter offloaded crawls.
            pick = max(partial, key=lambda v: (_gpu_share(v), v.bits_per_weight))
        if pick.verdict == "partial_gpu":
            p = pick.offload.plan
            reason = (
                f"no Q4-or-better variant fits entirely on the GPU; {pick.quant} runs with "
                f"{p.n_gpu_layers} of {p.n_layers_total} layers offloaded"
            )
        elif gpu:
            reason = f"nothing useful fits the GPU; {pick.quant} runs on the CPU"
        else:
            reason = (
                f"{pick.quant} is the best quality that runs well on this CPU within the RAM budget"
            )
            if pick.bits_per_weight <= CPU_QUALITY_CAP_BPW < ranked[0].bits_per_weight:
                reason += " (larger variants run much slower on a CPU for little gain)"
        if full and full[0] is not pick:
            alternative = full[0]
            reason += f"; {alternative.quant} would run fully on the GPU, faster but lower quality"
    if pick.low_quality:
        reason += f". Warning: {pick.warning}"
    return Recommendation(ranked, pick, reason, alternative)


def _gpu_share(v: VariantFit) -> float:
    p = v.offload.plan
    return p.n_gpu_layers / p.n_layers_total if p.n_layers_total else 0.0


def _recommend_by_speed(
    ranked: list[VariantFit], running: list[VariantFit], speed: SpeedRule
) -> Recommendation:
    """The user's rule: best quality among the variants that fit and reach the minimum speed."""
    rate = {v.file: speed.rate(v.file, v.offload.plan) for v in running}
    pool = [v for v in running if not v.low_quality] or running
    fast = [v for v in pool if rate[v.file] >= speed.min_tok_s]
    best = pool[0]
    if fast:
        pick = fast[0]
        reason = (
            f"{pick.quant} is the highest quality that fits with headroom and writes about "
            f"{rate[pick.file]:.0f} tokens/s (at least {speed.min_tok_s:g} asked)"
        )
        if pick is not best:
            reason += (
                f"; {best.quant} is better quality and fits too, but would write only about "
                f"{rate[best.file]:.1f} tokens/s"
            )
    else:
        pick = max(pool, key=lambda v: (rate[v.file], v.bits_per_weight))
        reason = (
            f"no variant of good quality writes {speed.min_tok_s:g} tokens/s on this machine; "
            f"{pick.quant} is the fastest, at about {rate[pick.file]:.1f} tokens/s"
        )
    if pick.low_quality:
        reason += f". Warning: {pick.warning}"
    alternative = best if pick is not best else None
    notes = [speed.describe()]
    notes += [
        f"{v.quant}: {'measured' if v.file in speed.measured else 'about'} "
        f"{rate[v.file]:.1f} tokens/s"
        for v in running
    ]
    return Recommendation(ranked, pick, reason, alternative, notes)

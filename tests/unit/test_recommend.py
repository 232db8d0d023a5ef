"""Recommendation policy on 7B-shaped variants with dry-run figures given as data."""

from __future__ import annotations

import pytest

from app.core.fit import GIB, MIB, Budget, DryRun
from app.core.gguf_header import read_local
from app.core.hardware import CpuInfo, GpuInfo, HardwareProfile
from app.core.recommend import budget_for, fit_variant, is_low_quality, recommend
from tests import fitshapes

QUANTS = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")


def _dry(n_ctx: int, ngl: int = 0) -> DryRun:
    return DryRun({"CPU": 72 * MIB + 64 * 1024 * n_ctx}, 128000, 0, ("CPU_REPACK",), 60 * MIB)


@pytest.fixture(scope="module")
def mistral():
    return {
        q: read_local(fitshapes.write_header_only(None, fitshapes.MISTRAL_7B, q)) for q in QUANTS
    }


def _rec(specs, budget, n_ctx=4096):
    fits = [fit_variant(f"m-{q}.gguf", s, _dry, budget, n_ctx) for q, s in specs.items()]
    return recommend(fits, budget), {f.quant: f for f in fits}


def test_quality_ranked_by_bits_per_weight_not_name(mistral):
    bpw = [mistral[q].bits_per_weight for q in QUANTS]
    assert bpw == sorted(bpw)
    assert is_low_quality("Q3_K_M", 3.9) and is_low_quality("Q2_K", 3.0)
    assert not is_low_quality("Q4_K_M", 4.8) and not is_low_quality("IQ4_XS", 4.25)


def test_best_full_gpu_variant_and_partial_alternative(mistral):
    rec, by = _rec(mistral, Budget(ram_bytes=16 * GIB, vram_bytes=8 * GIB))
    assert rec.recommended is not None and rec.recommended.verdict == "full_gpu"
    full = [f for f in by.values() if f.verdict == "full_gpu"]
    assert rec.recommended.bits_per_weight == max(f.bits_per_weight for f in full)
    assert rec.alternative is not None and rec.alternative.verdict == "partial_gpu"
    assert rec.alternative.bits_per_weight > rec.recommended.bits_per_weight
    assert "layers on the GPU" in rec.reason


def test_not_below_q4_when_q4_fits_anywhere(mistral):
    # 5 GiB of VRAM (4 usable): only Q2_K/Q3_K_M fit entirely, Q4_K_M fits partially -> take Q4_K_M.
    rec, by = _rec(mistral, Budget(ram_bytes=16 * GIB, vram_bytes=5 * GIB))
    assert by["Q3_K_M"].verdict == "full_gpu" and by["Q4_K_M"].verdict == "partial_gpu"
    assert rec.recommended is by["Q4_K_M"]  # the most layers on the GPU among Q4 or better
    assert not rec.recommended.low_quality
    assert rec.alternative is not None and rec.alternative.verdict == "full_gpu"
    assert by["Q2_K"].warning and "quality" in by["Q2_K"].warning


def test_low_quant_recommended_with_warning_when_nothing_better_fits(mistral):
    rec, by = _rec(mistral, Budget(ram_bytes=4 * GIB))
    assert by["Q4_K_M"].verdict == "no_fit"
    assert rec.recommended is not None and rec.recommended.low_quality
    assert "Warning" in rec.reason


def test_nothing_fits_says_so(mistral):
    rec, _ = _rec(mistral, Budget(ram_bytes=1 * GIB))
    assert rec.recommended is None and "no variant fits" in rec.reason


def test_budget_from_profile_and_what_if():
    cpu = CpuInfo("x", 8, 8, ["avx2"], "x86_64")
    pc = HardwareProfile(
        cpu, 16 * GIB, 12 * GIB, [GpuInfo("RTX 3060", "cuda", 12 * GIB, 11 * GIB)], ["cuda", "cpu"]
    )
    b = budget_for(pc)
    assert (b.ram_bytes, b.vram_bytes, b.unified) == (12 * GIB, 11 * GIB, False)
    assert budget_for(pc, vram_bytes=0).vram_bytes == 0  # what if: no GPU
    cpu_build = HardwareProfile(cpu, 16 * GIB, 12 * GIB, pc.gpus, ["cpu"])
    assert budget_for(cpu_build).vram_bytes == 0  # the build cannot use the GPU
    mac = HardwareProfile(
        cpu,
        8 * GIB,
        3 * GIB,
        [GpuInfo("Apple M1", "metal", 5726 * MIB, 5726 * MIB, unified=True)],
        ["metal", "cpu"],
    )
    m = budget_for(mac)
    assert m.unified and m.ram_bytes == 8 * GIB and m.vram_usable == 5726 * MIB - 512 * MIB

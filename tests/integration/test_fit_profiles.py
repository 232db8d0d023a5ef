"""Verdicts for fixed machines (given as data) on a Mistral-7B-shaped model, with real dry runs.

The model is a header-only GGUF of Mistral-7B's shape at seven quants (tests/fitshapes.py); the
compute buffers come from llama.cpp dry runs on it.  GPU budgets are planned with the CPU dry run's
compute buffer (this build has no GPU backend), as the plan says in its notes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app.core import fit
from app.core.fit import GIB, MIB
from app.core.gguf_header import read_local
from app.core.hardware import CpuInfo, GpuInfo, HardwareProfile
from app.core.recommend import budget_for, fit_variant, recommend
from tests import fitshapes

QUANTS = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")
_CPU = CpuInfo("test cpu", 8, 16, ["avx2"], "x86_64")
PROFILES = {
    # 8 GB M1: Metal's working set is 2/3 of RAM (5461 MiB); unified memory.
    "m1_8gb": HardwareProfile(
        _CPU,
        8 * GIB,
        5 * GIB,
        [GpuInfo("Apple M1", "metal", 5461 * MIB, 5461 * MIB, "", True)],
        ["metal", "cpu"],
    ),
    "pc_16gb_rtx3060": HardwareProfile(
        _CPU,
        16 * GIB,
        12 * GIB,
        [GpuInfo("RTX 3060", "cuda", 12 * GIB, 11 * GIB + 512 * MIB)],
        ["cuda", "cpu"],
    ),
    "laptop_4gb": HardwareProfile(_CPU, 4 * GIB, 2800 * MIB, [], ["cpu"]),
    "box_24gb_gpu": HardwareProfile(
        _CPU,
        64 * GIB,
        56 * GIB,
        [GpuInfo("RTX 4090", "cuda", 24 * GIB, 23 * GIB)],
        ["cuda", "cpu"],
    ),
}


@pytest.fixture(scope="module")
def variants():
    out = {}
    for q in QUANTS:
        path = fitshapes.write_header_only(None, fitshapes.MISTRAL_7B, q)
        out[q] = (path, read_local(path))
    return out


def _recommend(runner, variants, name, n_ctx=4096):
    budget = budget_for(PROFILES[name])
    fits = {
        q: fit_variant(q, spec, runner.dry_fn(path, spec), budget, n_ctx)
        for q, (path, spec) in variants.items()
    }
    return budget, fits, recommend(list(fits.values()), budget)


def _assert_contexts_within_budget(runner, variants, budget, fits):
    for q, f in fits.items():
        path, spec = variants[q]
        fn = runner.dry_fn(path, spec)
        if f.verdict == "no_fit":
            continue
        assert budget.fits(f.offload.plan), q
        ngl, best = f.offload.plan.n_gpu_layers, f.offload.max_ctx
        assert budget.fits(fit.plan_memory(spec, fn(best, ngl), best, ngl)), q
        if best < spec.n_ctx_train:
            nxt = best + fit.CTX_STEP
            assert not budget.fits(fit.plan_memory(spec, fn(nxt, ngl), nxt, ngl)), q


def test_m1_mac_8gb(runner, variants):
    budget, fits, rec = _recommend(runner, variants, "m1_8gb")
    assert budget.unified
    assert rec.recommended is fits["Q4_K_M"] and rec.recommended.verdict == "full_gpu"
    assert fits["Q6_K"].verdict == "partial_gpu"  # better quality, but only partly on the GPU
    assert rec.alternative is not None and rec.alternative.verdict == "partial_gpu"
    assert fits["F16"].verdict == "no_fit" and fits["Q8_0"].verdict != "full_gpu"
    assert "unified memory" in rec.reason
    _assert_contexts_within_budget(runner, variants, budget, fits)


def test_pc_16gb_with_rtx3060(runner, variants):
    budget, fits, rec = _recommend(runner, variants, "pc_16gb_rtx3060")
    assert rec.recommended is fits["Q8_0"] and fits["Q8_0"].verdict == "full_gpu"
    f16 = fits["F16"]
    assert f16.verdict == "partial_gpu" and 0 < f16.offload.plan.n_gpu_layers < 33
    assert rec.alternative is f16 and "F16" in rec.reason
    _assert_contexts_within_budget(runner, variants, budget, fits)


def test_laptop_4gb_cpu_only(runner, variants):
    budget, fits, rec = _recommend(runner, variants, "laptop_4gb")
    assert budget.vram_bytes == 0
    assert all(f.verdict == "no_fit" for f in fits.values())  # a 7B does not fit 2.8 GB free
    assert rec.recommended is None and "no variant fits" in rec.reason
    assert "RAM" in fits["Q2_K"].offload.reason


def test_gpu_box_24gb(runner, variants):
    budget, fits, rec = _recommend(runner, variants, "box_24gb_gpu")
    assert all(f.verdict == "full_gpu" for f in fits.values())
    assert rec.recommended is fits["F16"] and rec.alternative is None
    assert fits["Q4_K_M"].offload.max_ctx == 32768
    _assert_contexts_within_budget(runner, variants, budget, fits)


def test_a_longer_context_can_change_the_verdict(runner, variants):
    budget, fits, _ = _recommend(runner, variants, "m1_8gb", n_ctx=8192)
    assert fits["Q4_K_M"].verdict == "partial_gpu"  # the KV cache no longer fits with it
    assert fits["Q4_K_M"].offload.max_ctx >= 8192  # at the layers it keeps on the GPU


def _cli(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "app", *args, "--json"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_plan_cli_what_if_and_this_machine(variants):
    path = str(variants["Q4_K_M"][0])
    data = _cli("plan", path, "--ctx", "8192", "--ram-budget", "16G", "--vram-budget", "12G")
    for key in ("weights_bytes", "kv_bytes", "compute_bytes", "ram_bytes", "vram_bytes"):
        assert isinstance(data[key], int) and data[key] >= 0
    assert data["verdict"] == "full_gpu" and data["n_gpu_layers"] == 33
    assert data["max_ctx"] >= 8192 and data["kv_bytes"] == 1 * GIB
    assert any("estimated from the CPU dry run" in n for n in data["notes"])
    here = _cli("plan", path, "--ctx", "2048")
    assert here["verdict"] == "cpu" and here["vram_bytes"] == 0  # no GPU on this machine
    assert here["ram_bytes"] > here["weights_bytes"]


def test_plan_cli_refuses_bad_input(tmp_path):
    bad = tmp_path / "not.gguf"
    bad.write_bytes(b"hello world, not a model")
    out = subprocess.run(
        [sys.executable, "-m", "app", "plan", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0 and "not a GGUF file" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "app", "plan", str(bad), "--ram-budget", "lots"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "not a size" in out.stderr

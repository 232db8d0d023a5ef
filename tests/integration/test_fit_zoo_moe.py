"""MoE offload the way llama.cpp's --n-cpu-moe does it, against real llama.cpp.

* What-if VRAM budgets on the full-size Qwen3-30B-A3B-shaped header: keeping the experts of the
  first N layers in RAM keeps more of what each token reads on the GPU than dropping whole
  layers (and more bytes in all from 8 GiB up).
* Each scaled-down MoE of the zoo (qwen3moe, gemma4, gpt-oss) loads with expert buffer-type
  overrides on this CPU build: llama.cpp logs each moved tensor, and its buffers match the plan.
"""

from __future__ import annotations

import re

import pytest

from app.core import fit
from app.core.fit import GIB, Budget
from app.core.gguf_header import read_local
from tests import zoo

LOG_PRECISION = int(0.005 * fit.MIB) + 1


def _whole_layers(spec, budget, fn, n_ctx):
    lo = fit._largest_fitting_ngl(spec, budget, fn, n_ctx, "f16", "f16", 0)
    return fit._plan_at(spec, fn, n_ctx, lo, "f16", "f16")


MOE_FAMILIES = tuple(f for f in zoo.FAMILIES if zoo.SMALL[f].moe)


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_scaled_down_moe_loads_with_expert_overrides(runner, tmp_path, family):
    from app.core.engine import Engine
    from app.core.engine.protocol import GenerateRequest, MemorySettings, Sampling

    path = zoo.small_path(family)
    spec = read_local(path)
    n_ctx = 1024
    p, digest = runner.prepare(path, spec)
    dry = runner.run(p, digest, n_ctx, 0, MemorySettings(cpu_moe_layers=1))
    plan = fit.plan_memory(spec, dry, n_ctx, spec.n_layer + 1, cpu_moe_layers=1)
    experts0 = sum(t.nbytes for t in spec.tensors if t.layer == 0 and fit.is_expert_tensor(t.name))
    assert plan.expert_cpu_bytes == experts0 > 0
    assert plan.weights_cpu_bytes == experts0 + spec.input_bytes
    with Engine(log_dir=tmp_path) as eng:
        info = eng.load(path, n_ctx=n_ctx, memory=MemorySettings(cpu_moe_layers=1), n_threads=1)
        # On a CPU build every buffer is a CPU one: the override must not change what is allocated.
        model = sum(v for k, v in info.buffers.items() if k.endswith(" model"))
        assert abs(model - spec.weights_bytes) <= 2 * LOG_PRECISION
        assert abs(info.buffers["CPU compute"] - dry.compute["CPU"]) <= LOG_PRECISION
        # ...but llama.cpp did apply it, to layer 0's experts only (its log says so per tensor).
        log = "".join(p.read_text(errors="replace") for p in tmp_path.glob("engine-*.log"))
        moved = re.findall(r"tensor (blk\.\d+\.\S+) .* buffer type overridden to CPU", log)
        assert sorted(moved) == sorted(
            t.name for t in spec.tensors if t.layer == 0 and fit.is_expert_tensor(t.name)
        ), moved
        req = GenerateRequest(prompt="the model", max_tokens=3, sampling=Sampling.preset("greedy"))
        assert list(eng.generate(req))[-1].tokens >= 1


@pytest.mark.parametrize("vram_gib", [4, 8, 12, 24])
def test_expert_offload_keeps_more_on_the_gpu(planner, vram_gib):
    path = zoo.full_path("qwen3moe", quant="Q8_0")  # 32 GB: 24 GiB is not enough
    spec = planner.spec(path)
    assert fit.has_experts(spec) and spec.weights_bytes > 28 * GIB
    fn = planner.dry_fn(path, spec)
    budget = Budget(ram_bytes=64 * GIB, vram_bytes=vram_gib * GIB)
    n_ctx = 4096
    offload = fit.plan_offload(spec, budget, fn, n_ctx)
    plan = offload.plan
    whole = _whole_layers(spec, budget, fn, n_ctx)
    assert budget.fits(plan) and plan.vram_bytes <= budget.vram_usable
    # More of what each token reads stays on the GPU (all attention, a few experts); at 8 GiB and
    # above more bytes in all too.  At 4 GiB whole layers hold slightly more VRAM, mostly experts
    # a token does not read.
    per_token = fit.gpu_bytes_per_token(spec, plan), fit.gpu_bytes_per_token(spec, whole)
    assert per_token[0] > per_token[1], (vram_gib, per_token)
    if vram_gib >= 8:
        assert plan.vram_bytes > whole.vram_bytes, (vram_gib, plan.n_gpu_layers)
    assert plan.cpu_moe_layers > 0
    assert f"experts of {plan.cpu_moe_layers} of {spec.n_layer} layers in RAM" in offload.reason
    assert offload.to_json()["cpu_moe_layers"] == plan.cpu_moe_layers
    if vram_gib >= 12:  # every layer's attention on the GPU, only experts in RAM
        assert plan.n_gpu_layers == spec.n_layer + 1
        # the fewest experts moved: one expert tensor fewer in RAM would not fit
        units = plan.cpu_moe_layers * fit.expert_tensors_per_layer(spec) + plan.cpu_moe_extra
        tighter = fit._plan_at(spec, fn, n_ctx, spec.n_layer + 1, "f16", "f16", units - 1)
        assert tighter.vram_bytes > budget.vram_usable

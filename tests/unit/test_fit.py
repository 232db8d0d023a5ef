"""Memory plan arithmetic: KV formula, layer placement, repacking, budgets, the planner's search.

The ModelSpec comes from a header-only Llama-2-7B / Mistral-7B GGUF (tests/fitshapes.py); the
dry-run figures are given as data (they are checked against llama.cpp in the integration tests).
"""

from __future__ import annotations

import pytest

from app.core.fit import (
    GIB,
    MIB,
    PAGE,
    Budget,
    DryRun,
    cpu_work_bytes,
    embedding_resident_bytes,
    kv_bytes,
    kv_layer_bytes,
    load_transient_bytes,
    max_context,
    pad_ctx,
    plan_memory,
    plan_offload,
    repacked_types,
)
from app.core.gguf_header import read_local
from tests import fitshapes


@pytest.fixture(scope="module")
def shapes():
    return {
        (s.name, q): read_local(fitshapes.write_header_only(None, s, q))
        for s in (fitshapes.LLAMA2_7B, fitshapes.MISTRAL_7B)
        for q in ("Q4_K_M", "Q8_0")
    }


def _dry(n_ctx: int, ngl: int = 0, extras: tuple[str, ...] = ("CPU_REPACK",)) -> DryRun:
    # Shape of llama.cpp's CPU compute buffer for a 7B without flash attention (measured: 105.5
    # MiB at 512, 320 MiB at 4096): a constant plus 64 KiB per context token.
    return DryRun({"CPU": 72 * MIB + 64 * 1024 * n_ctx}, 128000, 0, extras, 60 * MIB)


def test_kv_formula_llama2_and_mistral(shapes):
    llama = shapes[("llama-2-7b", "Q4_K_M")]
    mistral = shapes[("mistral-7b", "Q4_K_M")]
    assert kv_bytes(llama, 4096) == 2 * GIB  # 32 layers x 4096 cells x 2 x 4096 x 2 bytes
    assert kv_bytes(mistral, 4096) == 512 * MIB  # 8 KV heads of 32
    assert kv_bytes(mistral, 4096, "q8_0", "q8_0") == 512 * MIB * 34 // 64
    assert kv_bytes(mistral, 4096, "q4_0", "q4_0") == 512 * MIB * 18 // 64
    assert kv_bytes(llama, 1000) == kv_bytes(llama, 1024)  # cells padded to 256
    assert pad_ctx(1) == 256 and pad_ctx(257) == 512
    with pytest.raises(ValueError, match="unknown KV cache type"):
        kv_bytes(llama, 4096, "q3_k")


def test_sliding_window_layers_follow_llama_cpp_rules(shapes):
    spec = shapes[("mistral-7b", "Q4_K_M")]
    full = pad_ctx(32768) * 2 * 1024 * 2
    spec.n_swa = 4096
    try:
        # llama.cpp's llama architecture ignores a sliding_window key: every layer is global.
        assert kv_layer_bytes(spec, 32768, swa_full=False)[0] == full
        spec.architecture = "gemma3"  # no pattern key: every sixth layer is global
        layers = kv_layer_bytes(spec, 32768, swa_full=False)
        window = pad_ctx(4096 + 512) * 2 * 1024 * 2
        assert layers[:6] == [window] * 5 + [full]
        # swa_full (llama-cpp-python's default) keeps a full-size cache for every layer.
        assert kv_layer_bytes(spec, 32768)[:6] == [full] * 6
    finally:
        spec.n_swa = 0
        spec.architecture = "llama"


def test_weights_split_like_llama_cpp(shapes):
    spec = shapes[("llama-2-7b", "Q4_K_M")]
    layers = spec.layer_bytes()
    cpu = plan_memory(spec, _dry(4096), 4096, 0)
    assert cpu.weights_gpu_bytes == 0 and cpu.weights_cpu_bytes == spec.weights_bytes
    # n_gpu_layers=1 is the output layer only; n_layer+1 is everything but token_embd.
    one = plan_memory(spec, _dry(4096), 4096, 1)
    assert one.weights_gpu_bytes == spec.output_bytes and one.kv_gpu_bytes == 0
    five = plan_memory(spec, _dry(4096), 4096, 5)
    assert five.weights_gpu_bytes == spec.output_bytes + sum(layers[-4:])
    assert five.kv_gpu_bytes == 4 * kv_bytes(spec, 4096) // 32
    full = plan_memory(spec, _dry(4096), 4096, 99)
    assert full.n_gpu_layers == 33 and full.weights_cpu_bytes == spec.input_bytes
    assert full.kv_cpu_bytes == 0 and full.compute_gpu_bytes > 0
    assert any("estimated from the CPU dry run" in n for n in full.notes)


def test_repacking_changes_what_stays_resident(shapes):
    spec = shapes[("llama-2-7b", "Q4_K_M")]
    repack = plan_memory(spec, _dry(4096), 4096, granule=1)  # byte-exact page cache
    q4k = sum(
        t.nbytes for t in spec.tensors if t.type_name == "Q4_K" and t.name != "token_embd.weight"
    )
    assert repack.repacked_bytes == q4k
    embd = spec.input_bytes - embedding_resident_bytes(spec.input_bytes, spec.n_vocab, 4096)
    assert 0 < embd < spec.input_bytes  # only rows of tokens in the context are paged in
    assert repack.mapped_resident_bytes == spec.weights_bytes - q4k - embd
    # the file is read once, and the loader's metadata lives until the load ends
    transient = load_transient_bytes(spec)
    assert transient > 0
    assert repack.peak_ram_bytes == repack.ram_bytes + q4k + embd + transient
    plain = plan_memory(spec, _dry(4096, extras=()), 4096, granule=1)
    assert plain.repacked_bytes == 0 and plain.ram_bytes == repack.ram_bytes
    q8 = shapes[("llama-2-7b", "Q8_0")]
    amx = plan_memory(q8, _dry(4096, extras=("AMX",)), 4096, granule=1)
    matmul = [t for t in q8.tensors if len(t.shape) == 2 and t.name != "token_embd.weight"]
    assert amx.repacked_bytes == sum(int(t.nbytes * 38 / 34) for t in matmul)  # +4 B per block
    embd = q8.input_bytes - embedding_resident_bytes(q8.input_bytes, q8.n_vocab, 4096)
    assert amx.mapped_resident_bytes == q8.weights_bytes - sum(t.nbytes for t in matmul) - embd


def test_page_cache_keeps_whole_granules_of_mapped_tensors(shapes):
    spec = shapes[("llama-2-7b", "Q4_K_M")]
    exact = plan_memory(spec, _dry(4096), 4096, granule=1)
    paged = plan_memory(spec, _dry(4096), 4096, granule=PAGE)
    folios = plan_memory(spec, _dry(4096), 4096, granule=2 * MIB)
    assert exact.mapped_resident_bytes < paged.mapped_resident_bytes
    assert paged.mapped_resident_bytes < folios.mapped_resident_bytes
    assert folios.mapped_resident_bytes % (2 * MIB) == 0
    # Each run of mapped tensors costs at most one extra granule at each end: small norms
    # between repacked matrices share granules instead of costing 2 MiB each.
    runs = 2 * (spec.n_layer + 2) * 3
    assert folios.mapped_resident_bytes - exact.mapped_resident_bytes <= runs * 2 * MIB
    assert folios.ram_bytes - exact.ram_bytes == folios.mapped_resident_bytes - (
        exact.mapped_resident_bytes
    )
    whole = plan_memory(spec, _dry(4096), 4096, granule=64 * GIB)  # one granule: the whole file
    assert whole.mapped_resident_bytes == 64 * GIB


def test_cpu_work_buffer_of_attention_without_flash_attention(shapes):
    spec = shapes[("mistral-7b", "Q4_K_M")]  # 32 query heads
    assert cpu_work_bytes(spec, 4096) == 4096 * 512 * 32 * 2  # f32 attention weights -> f16
    assert cpu_work_bytes(spec, 100) == 256 * 100 * 32 * 2  # a batch no larger than the context
    assert cpu_work_bytes(spec, 4096, "q8_0") == 0  # flash attention: no conversion
    cpu = plan_memory(spec, _dry(4096), 4096)
    assert cpu.compute_cpu_bytes == _dry(4096).cpu_compute_bytes + cpu_work_bytes(spec, 4096)
    assert any("work buffer" in n for n in cpu.notes)
    partial = plan_memory(spec, _dry(4096), 4096, spec.n_layer)  # one layer stays on the CPU
    assert partial.compute_cpu_bytes == cpu.compute_cpu_bytes
    full = plan_memory(spec, _dry(4096), 4096, spec.n_layer + 1)  # no attention on the CPU
    assert full.compute_cpu_bytes < cpu_work_bytes(spec, 4096)


def test_ram_is_the_sum_of_its_parts(shapes):
    spec = shapes[("mistral-7b", "Q4_K_M")]
    p = plan_memory(spec, _dry(8192), 8192)
    assert p.ram_bytes == (
        p.repacked_bytes
        + p.mapped_resident_bytes
        + p.kv_bytes
        + p.compute_bytes
        + p.output_bytes
        + p.overhead_bytes
    )
    assert p.vram_bytes == 0


def test_budget_margins_and_unified():
    b = Budget(ram_bytes=16 * GIB, vram_bytes=12 * GIB)
    assert b.ram_usable == 16 * GIB - 512 * MIB and b.vram_usable == 11 * GIB
    assert Budget(ram_bytes=8 * GIB).vram_usable == 0


def test_planner_cpu_only_and_no_fit(shapes):
    spec = shapes[("mistral-7b", "Q4_K_M")]
    big = plan_offload(spec, Budget(ram_bytes=24 * GIB), _dry, 4096)
    assert big.verdict == "cpu" and big.plan.n_gpu_layers == 0
    assert big.max_ctx == spec.n_ctx_train  # 32768 fits 24 GB
    small = plan_offload(spec, Budget(ram_bytes=4 * GIB), _dry, 4096)
    assert small.verdict == "no_fit" and "RAM" in small.reason


def test_planner_partial_offload_takes_the_most_layers_that_fit(shapes):
    spec = shapes[("llama-2-7b", "Q8_0")]
    budget = Budget(ram_bytes=32 * GIB, vram_bytes=6 * GIB)
    o = plan_offload(spec, budget, _dry, 4096)
    assert o.verdict == "partial_gpu"
    ngl = o.plan.n_gpu_layers
    assert o.plan.vram_bytes <= budget.vram_usable
    more = plan_memory(spec, _dry(4096), 4096, ngl + 1)
    assert more.vram_bytes > budget.vram_usable
    assert str(ngl) in o.reason and "of 33" in o.reason


@pytest.mark.parametrize("ram_gib", [3, 5, 7, 12])
def test_max_context_never_exceeds_the_budget(shapes, ram_gib):
    spec = shapes[("mistral-7b", "Q4_K_M")]
    budget = Budget(ram_bytes=ram_gib * GIB)
    best = max_context(spec, budget, _dry, 0)
    if best:
        assert budget.fits(plan_memory(spec, _dry(best), best))
    if best < spec.n_ctx_train:
        nxt = best + 256
        assert not budget.fits(plan_memory(spec, _dry(nxt), nxt))


def test_repacked_types_follow_the_cpu_features():
    avx2 = repacked_types("CPU_REPACK", ("avx2",))
    # ggml-cpu's repack.cpp: Q2_K's repacked kernel needs AVX-512; gpt-oss's MXFP4 experts repack
    assert set(avx2) == {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}
    assert "Q2_K" in repacked_types("CPU_REPACK", ("avx2", "avx512"))
    arm = set(repacked_types("CPU_REPACK", ("neon", "dotprod")))
    assert arm == set(avx2) | {"Q5_K", "Q6_K", "Q8_0", "Q1_0"}  # ARM repacks more K-quants
    assert repacked_types("CPU_REPACK", ("neon",)) == {}
    assert repacked_types("CPU_REPACK", ()) == avx2  # older cached dry runs: AVX2 baseline
    assert repacked_types("AMX", ())["Q8_0"] == 38 / 34
    assert repacked_types("KLEIDIAI", ("neon",)) == {}


def test_plan_options_follow_the_user_settings():
    from app.core.planning import PlanOptions
    from app.core.settings import Settings

    s = Settings()
    assert PlanOptions.from_settings(s) == PlanOptions()
    s.set("swa_full", False)
    s.set("flash_attn", "on")
    s.set("n_ubatch", 256)
    o = PlanOptions.from_settings(s, "q8_0", "q8_0")
    assert (o.swa_full, o.flash_attn, o.n_ubatch, o.type_v) == (False, True, 256, "q8_0")
    with pytest.raises(ValueError):
        s.set("flash_attn", "sometimes")

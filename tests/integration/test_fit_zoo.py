"""The plan against real llama.cpp on every family of the architecture zoo (tests/zoo.py).

For each scaled-down zoo model, at two contexts: the plan's weights, each KV cache (full and
windowed) or recurrent state, compute and output buffers equal what a real load logs.  Full-size
header-only files plan at their true size through the same dry runs.  Figures llama.cpp logs in
MiB with two decimals are compared within that precision.
"""

from __future__ import annotations

import pytest

from app.core import fit
from app.core.dryrun import DryRunner, MemorySettings
from app.core.engine import Engine
from app.core.engine.protocol import GenerateRequest, Sampling
from app.core.gguf_header import read_local
from tests import zoo

pytestmark = pytest.mark.skipif(not zoo.available(), reason="llama.cpp vocab files not found")

LOG_PRECISION = int(0.005 * fit.MIB) + 1
CONTEXTS = (1024, 4096)


def _dry(runner: DryRunner, path, n_ctx, cache="f16", settings=None):
    spec = read_local(path)
    p, digest = runner.prepare(path, spec)
    return spec, runner.run(p, digest, n_ctx, 0, cache, cache, settings)


def _close(a: int, b: int, rel: float = 0.01) -> bool:
    return abs(a - b) <= max(LOG_PRECISION, rel * max(a, b))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with Engine(log_dir=tmp_path_factory.mktemp("zoo-logs")) as eng:
        eng.start()  # before the first test: the leak check sees it as pre-existing
        yield eng


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_plan_equals_a_real_load_of_each_family(runner, engine, family):
    path = zoo.small_path(family)
    for n_ctx, cache in zip(CONTEXTS, ("f16", "q8_0"), strict=True):
        spec, dry = _dry(runner, path, n_ctx, cache)
        plan = fit.plan_memory(spec, dry, n_ctx, 0, cache, cache)
        info = engine.load(path, n_ctx=n_ctx, type_k=cache, type_v=cache, n_threads=1)
        assert spec.weights_bytes == dry.model_bytes
        bufs = info.buffers
        # The plan's compute is the dry run's plus ggml's work buffer (not a logged buffer).
        work = plan.compute_cpu_bytes - dry.compute["CPU"]
        assert work >= 0
        assert _close(bufs["CPU compute"], dry.compute["CPU"]), (family, n_ctx)
        assert _close(bufs.get("CPU output", 0), plan.output_bytes)
        # Each cache, one by one: kind, cells, layers and bytes as the real load allocates them.
        real = [(c.kind, c.cells, len(c.layers)) for c in info.caches]
        planned = [(c["kind"], c["cells"], c["layers"]) for c in plan.kv_caches]
        assert planned == real, (family, n_ctx)
        for c, p in zip(info.caches, plan.kv_caches, strict=True):
            assert abs(c.nbytes - p["bytes"]) <= LOG_PRECISION, (family, n_ctx, c)
        assert _close(sum(c.nbytes for c in info.caches), plan.kv_bytes)
    # It generates for real.
    req = GenerateRequest(prompt="the model", max_tokens=4, sampling=Sampling.preset("greedy"))
    stats = list(engine.generate(req))[-1]
    assert stats.tokens >= 1
    engine.unload()


def test_windowed_model_without_pattern_key_gets_llama_cpp_pattern(runner):
    path = zoo.small_path("gemma3")
    spec = read_local(path)
    assert "gemma3.attention.sliding_window_pattern" not in spec.metadata
    _, dry = _dry(runner, path, 4096, settings=MemorySettings(swa_full=False))
    assert dry.swa_layers == (0, 1, 2, 3, 4)  # every sixth layer is global
    assert [il for il in range(spec.n_layer) if fit._is_swa_layer(spec, il)] == [0, 1, 2, 3, 4]
    # The plan changes with the context; the window does not.
    plans = {}
    for n_ctx in (2048, 8192):
        _, d = _dry(runner, path, n_ctx, settings=MemorySettings(swa_full=False))
        plans[n_ctx] = fit.plan_memory(spec, d, n_ctx)
        # the formula (only a fallback) agrees with llama.cpp's figure
        formula = fit.kv_bytes(spec, n_ctx, swa_full=False)
        assert abs(formula - plans[n_ctx].kv_bytes) <= 2 * LOG_PRECISION
    full = {c["kind"]: c for c in plans[8192].kv_caches}
    assert full["swa"]["cells"] == fit.pad_ctx(spec.n_swa + 512) < full["full"]["cells"] == 8192
    assert plans[8192].kv_bytes > plans[2048].kv_bytes


def test_swa_full_changes_the_plan_and_the_load_alike(runner, engine):
    path = zoo.small_path("gemma3")
    n_ctx = 4096
    got = {}
    for swa_full in (True, False):
        spec, dry = _dry(runner, path, n_ctx, settings=MemorySettings(swa_full=swa_full))
        plan = fit.plan_memory(spec, dry, n_ctx)
        info = engine.load(path, n_ctx=n_ctx, swa_full=swa_full, n_threads=1)
        assert [c["bytes"] for c in plan.kv_caches] == pytest.approx(
            [c.nbytes for c in info.caches], abs=LOG_PRECISION
        )
        assert any(("full size" in n) == swa_full for n in plan.notes if "sliding-window" in n)
        got[swa_full] = plan.kv_bytes
    engine.unload()
    assert got[False] < got[True] / 2


def test_full_size_headers_plan_at_their_true_size(runner):
    for family in zoo.FAMILIES:
        path = zoo.full_path(family)
        spec, dry = _dry(runner, path, 8192)
        assert spec.weights_bytes == dry.model_bytes, family
        plan = fit.plan_memory(spec, dry, 8192)
        assert plan.weights_bytes > 5e8, family
        assert plan.kv_bytes > 0 and plan.compute_bytes > 0, family
        if family == "lfm2":
            assert plan.state_bytes > 0  # recurrent layers: a fixed state, not KV

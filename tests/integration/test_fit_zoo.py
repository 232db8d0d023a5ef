"""The plan against real llama.cpp on every family of the architecture zoo (tests/zoo.py).

For each scaled-down zoo model, at two contexts: the plan's weights, each KV cache (full and
windowed) or recurrent state, compute and output buffers equal what a real load logs.  Full-size
header-only files plan at their true size through the same dry runs.  Figures llama.cpp logs in
MiB with two decimals are compared within that precision.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.core import fit
from app.core.dryrun import DryRunner
from app.core.engine import Engine
from app.core.engine.protocol import GenerateRequest, MemorySettings, Sampling
from app.core.gguf_header import read_local
from tests import zoo

LOG_PRECISION = int(0.005 * fit.MIB) + 1
CONTEXTS = (1024, 4096)


def _dry(runner: DryRunner, path, n_ctx, cache="f16", **memory):
    spec = read_local(path)
    p, digest = runner.prepare(path, spec)
    settings = MemorySettings(type_k=cache, type_v=cache, **memory)
    return spec, runner.run(p, digest, n_ctx, 0, settings)


def _close(a: int, b: int, rel: float = 0.01) -> bool:
    return abs(a - b) <= max(LOG_PRECISION, rel * max(a, b))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with Engine(log_dir=tmp_path_factory.mktemp("zoo-logs")) as eng:
        eng.start()  # before the first test: the leak check sees it as pre-existing
        yield eng


# (context, cache type, swa_full): both cache types and both sliding-window settings get a real load.
RUNS = ((1024, "f16", True), (4096, "q8_0", False))


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_plan_equals_a_real_load_of_each_family(runner, engine, family):
    path = zoo.small_path(family)
    for n_ctx, cache, swa_full in RUNS:
        spec, dry = _dry(runner, path, n_ctx, cache, swa_full=swa_full)
        plan = fit.plan_memory(spec, dry, n_ctx, 0, cache, cache)
        memory = MemorySettings(type_k=cache, type_v=cache, swa_full=swa_full)
        info = engine.load(path, n_ctx=n_ctx, memory=memory, n_threads=1)
        assert spec.weights_bytes == dry.model_bytes
        bufs = info.buffers
        model = sum(v for k, v in bufs.items() if k.endswith(" model"))
        assert abs(model - plan.weights_bytes) <= 2 * LOG_PRECISION, (family, n_ctx)
        # The plan's compute is the dry run's plus ggml's work buffer (not a logged buffer).
        assert plan.compute_cpu_bytes >= dry.compute["CPU"]
        assert _close(bufs["CPU compute"], dry.compute["CPU"]), (family, n_ctx)
        assert _close(bufs.get("CPU output", 0), plan.output_bytes)
        # Each cache, one by one: kind, cells, layers and bytes as the real load allocates them.
        real = [(c.kind, c.cells, len(c.layers)) for c in info.caches]
        planned = [(c["kind"], c["cells"], c["layers"]) for c in plan.kv_caches]
        assert planned == real, (family, n_ctx)
        for c, p in zip(info.caches, plan.kv_caches, strict=True):
            assert abs(c.nbytes - p["bytes"]) <= LOG_PRECISION, (family, n_ctx, c)
        assert _close(sum(c.nbytes for c in info.caches), plan.kv_bytes)
        # The planner's own model of the caches (head sizes per layer, V padding, windows) gives
        # the same bytes: the plan took exact products, not llama.cpp's rounded MiB.
        formula = fit.kv_bytes(
            spec, n_ctx, cache, cache, swa_full=swa_full, flash_attn=dry.flash_attn
        )
        assert formula + plan.state_bytes == plan.kv_bytes, (family, n_ctx)
        # Flash attention is llama.cpp's automatic choice: on for every layer on this CPU build,
        # and the load resolves it as its dry run did.
        assert dry.flash_attn is True and info.flash_attn is True, (family, n_ctx)
        if spec.n_swa and family != "phi3":  # phi3: llama.cpp disables its window
            swa = next(c for c in plan.kv_caches if c["kind"] == "swa")
            assert (swa["cells"] == fit.pad_ctx(n_ctx)) == swa_full, (family, swa)
        if family == "lfm2":
            assert [c.kind for c in info.caches] == ["full", "state"]
    # It generates for real.
    req = GenerateRequest(prompt="the model", max_tokens=4, sampling=Sampling.preset("greedy"))
    stats = list(engine.generate(req))[-1]
    assert stats.tokens >= 1
    engine.unload()


def test_windowed_model_without_pattern_key_gets_llama_cpp_pattern(runner):
    path = zoo.small_path("gemma3")
    spec = read_local(path)
    assert "gemma3.attention.sliding_window_pattern" not in spec.metadata
    plans = {}
    for n_ctx, swa_full in ((4096, False), (8192, False), (8192, True)):
        _, dry = _dry(runner, path, n_ctx, "q8_0", swa_full=swa_full)
        assert dry.swa_layers == (0, 1, 2, 3, 4)  # every sixth layer is global
        plans[n_ctx, swa_full] = plan = fit.plan_memory(spec, dry, n_ctx, 0, "q8_0", "q8_0")
        # the formula (only a fallback) agrees with llama.cpp's figures
        formula = fit.kv_bytes(spec, n_ctx, "q8_0", "q8_0", swa_full=swa_full, flash_attn=True)
        assert abs(formula - plan.kv_bytes) <= 2 * LOG_PRECISION
        assert any(("full size" in n) == swa_full for n in plan.notes if "sliding-window" in n)
    assert [il for il in range(spec.n_layer) if fit._is_swa_layer(spec, il)] == [0, 1, 2, 3, 4]
    caches = {c["kind"]: c for c in plans[8192, False].kv_caches}
    assert caches["swa"]["cells"] == fit.pad_ctx(spec.n_swa + 512) < caches["full"]["cells"]
    # The plan changes with the context (the global layer) and with swa_full (the windowed ones).
    assert plans[8192, False].kv_bytes > plans[4096, False].kv_bytes
    assert plans[8192, False].kv_bytes < plans[8192, True].kv_bytes / 2


@pytest.mark.parametrize("family", ["gemma3", "lfm2", "phi3", "gemma4", "gptoss"])
def test_full_size_headers_plan_at_their_true_size(runner, family):
    path = zoo.full_path(family)
    # a full-size sliding-window cache: every layer's cells at the true size; without flash
    # attention, the layout where V is transposed (and padded) that the formula must know too
    spec, dry = _dry(runner, path, 8192, swa_full=True, flash_attn=False)
    assert spec.weights_bytes == dry.model_bytes
    plan = fit.plan_memory(spec, dry, 8192)
    assert plan.weights_bytes > 5e8
    assert plan.kv_bytes > 0 and plan.compute_bytes > 0
    caches = {c["kind"]: c for c in plan.kv_caches}
    if family == "lfm2":
        assert plan.state_bytes > 0  # recurrent layers: a fixed state, not KV
    if family == "gemma3":  # 8 global layers of 48: llama.cpp's pattern at the true size
        assert caches["full"]["layers"] == 8
    if family == "gemma4":
        # 5 global layers of 30 with 2 KV heads of 512, 25 windowed with 8 of 256; f16 without
        # flash attention stores V transposed, each layer's padded to the widest (8 x 256).
        assert dry.swa_layers == tuple(il for il in range(30) if il % 6 != 5)
        assert caches["full"] == {
            "kind": "full",
            "cells": 8192,
            "layers": 5,
            "bytes": 8192 * 5 * (2 * 512 + 8 * 256) * 2,
        }
        assert caches["swa"]["layers"] == 25
        assert caches["swa"]["bytes"] == 8192 * 25 * (8 * 256 * 2) * 2
        assert plan.kv_bytes == fit.kv_bytes(spec, 8192)  # the formula knows both head sizes
    if family == "gptoss":
        # llama.cpp's load_swa_pattern(ml, 2) without a pattern key: the even layers windowed.
        assert dry.swa_layers == tuple(range(0, 24, 2))
        assert spec.n_vocab == 201088 and spec.quant == "MXFP4_MOE"
        experts = [
            t for t in spec.tensors if fit.is_expert_tensor(t.name) and t.name.endswith("weight")
        ]
        assert len(experts) == 3 * 24
        assert all(t.type_name == "MXFP4" and t.nbytes == t.n_elements // 32 * 17 for t in experts)
        _, windowed = _dry(runner, path, 8192, swa_full=False)
        small = {c["kind"]: c for c in fit.plan_memory(spec, windowed, 8192).kv_caches}
        row = 8 * 64 * 2 * 2  # 8 KV heads of 64, K and V in f16
        assert small["swa"] == {"kind": "swa", "cells": 768, "layers": 12, "bytes": 768 * 12 * row}
        assert small["full"] == {
            "kind": "full",
            "cells": 8192,
            "layers": 12,
            "bytes": 8192 * 12 * row,
        }


def test_unknown_architecture_is_unsupported_before_download(planner, tmp_path):
    from dataclasses import replace

    from app.core.errors import ErrorKind, QuantDeskError

    odd = replace(zoo.FULL["phi3"], family="nova", arch="nova-lm")
    path = zoo.full_path("nova", odd)  # header only: nothing to download, nothing loaded
    with pytest.raises(QuantDeskError) as err:
        planner.fit(path, 4096)
    assert err.value.kind == ErrorKind.UNSUPPORTED
    assert "'nova-lm' architecture is not supported by this llama.cpp build" in str(err.value)


def test_a_chat_reserves_compute_for_one_row_of_logits(runner, engine):
    """Chat loads ask llama.cpp for one output row per micro-batch, and the plan is made for it.

    On gemma3's 262k vocabulary the default reservation holds 512 rows of logits (512 MiB) that
    a chat never writes; with n_outputs_max=1 llama.cpp reserves what the chat uses and the dry
    run says the same.  A scoring pass needs every row: on a chat load it is refused in words
    (llama.cpp would abort), and a load for scoring reserves what its plan says.
    """
    from app.core.engine.client import EngineError
    from app.core.engine.protocol import ScoreRequest, TokenizeRequest

    path = zoo.small_path("gemma3")
    n_ctx = 1024
    spec, chat = _dry(runner, path, n_ctx, n_outputs_max=1)
    _, score = _dry(runner, path, n_ctx, n_outputs_max=0)
    logits = 512 * spec.n_vocab * 4
    assert score.compute["CPU"] - chat.compute["CPU"] >= 0.95 * logits  # all but 1 row, ~
    info = engine.load(path, n_ctx=n_ctx, n_threads=1)  # Engine.load's default: a chat's
    assert _close(info.buffers["CPU compute"], chat.compute["CPU"])
    plan = fit.plan_memory(spec, chat, n_ctx)
    assert fit.workload_ram_bytes(spec, chat, plan, "chat") == plan.ram_bytes
    with pytest.raises(ValueError, match="n_outputs_max"):
        fit.workload_ram_bytes(spec, chat, plan, "score")
    tokens = engine.request(TokenizeRequest("the model reads the memory plan " * 40))
    with pytest.raises(EngineError, match="loaded for chat"):
        engine.request(ScoreRequest(tokens=list(tokens), start=1))
    info = engine.load(path, n_ctx=n_ctx, n_threads=1, memory=MemorySettings(n_outputs_max=0))
    assert _close(info.buffers["CPU compute"], score.compute["CPU"])
    result = engine.request(ScoreRequest(tokens=list(tokens), start=1))
    assert len(result.nll) == len(tokens) - 1 and bool(np.isfinite(result.nll).all())
    engine.unload()
    # The heap llama.cpp allocates for the model (above all its 262k-token vocabulary and merges)
    # is measured by the dry run, where glibc can tell: 100-200 bytes per entry.
    entries = len(spec.metadata["tokenizer.ggml.tokens"]) + len(
        spec.metadata["tokenizer.ggml.merges"]
    )
    assert 100 * entries < chat.host_model_bytes < 200 * entries


def test_a_window_only_cache_reuses_appended_turns_and_redoes_a_rewound_chat(engine):
    """swa_full off keeps only the window of gemma3's sliding-window layers (256 here).

    Appending a turn reuses the cache; a chat rewound to a point whose window the cache has
    dropped is evaluated afresh (llama-cpp-python alone would reuse it and answer from a broken
    window), and answers as a fresh engine does.
    """
    from app.core.engine.protocol import TokenizeRequest

    path = zoo.small_path("gemma3")
    greedy = Sampling.preset("greedy")

    def text(tag: str, n: int) -> str:
        return " ".join(f"{tag}{i % 97} plan" for i in range(n))

    def reply(prompt: str):
        req = GenerateRequest(
            prompt=prompt, max_tokens=8, sampling=greedy, stream=False, ignore_eos=True
        )
        return engine.complete(req)

    window_only = MemorySettings(swa_full=False)
    engine.load(path, n_ctx=4096, memory=window_only, n_threads=1)
    first = text("a", 300)
    one = reply(first)
    second = first + one.text + text("b", 300)
    two = reply(second)
    assert two.cached_prompt_tokens >= one.prompt_tokens - 1  # the appended turn reused it
    assert two.prompt_tokens > 1200  # far past the window: older positions were dropped
    head = len(engine.request(TokenizeRequest(first[: len(first) // 2])))
    rewound = first[: len(first) // 2] + text("c", 100)  # the first turn edited halfway
    three = reply(rewound)
    assert head > 256 and three.cached_prompt_tokens == 0, three
    engine.load(path, n_ctx=4096, memory=window_only, n_threads=1)  # a fresh context
    assert reply(rewound).text == three.text
    engine.unload()

"""Flow control and limits of the engine child, on real llama.cpp: no stalls, no unbounded waits.

A stream of tokens without printable text (control tokens forced by a logit bias) used to stall
both processes once the flow window filled; these runs would hang without the fix, so each engine
here has a short stall limit that turns a regression into a failure instead of a hung suite.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from app.core.engine import Engine, EngineCrashed, EngineError, GenerationStats, Sampling
from app.core.engine.host import STREAM_WINDOW
from app.core.engine.protocol import GenerateRequest, MemorySettings, ScoreRequest
from app.core.errors import ErrorKind
from tests import modelfactory

GREEDY = Sampling.preset("greedy")
HELLO = [{"role": "user", "content": "Tell me about the model."}]
IM_START = 3  # a control token of the generated vocabulary (not end-of-generation): no text
SILENT = {IM_START: 100.0}
N_SILENT = 3 * STREAM_WINDOW + 8


@pytest.fixture
def engine(tmp_path):
    eng = Engine(log_dir=tmp_path / "logs", stall_timeout_s=20)
    yield eng
    eng.close()


def _run(engine: Engine, req: GenerateRequest) -> tuple[list[str], GenerationStats]:
    pieces: list[str] = []
    stats = None
    for item in engine.generate(req):
        if isinstance(item, GenerationStats):
            stats = item
        else:
            pieces.append(item)
    assert stats is not None
    return pieces, stats


@pytest.mark.parametrize("quant", ["F16", *modelfactory.QUANTS])
def test_tokens_without_text_never_stall_chat_or_scoring(engine, quant):
    # loaded as a comparison loads (for scoring too: every position's logits)
    memory = MemorySettings(n_outputs_max=0)  # a scoring load
    engine.load(modelfactory.model_path(quant), n_ctx=512, n_threads=1, memory=memory)
    req = GenerateRequest(messages=HELLO, max_tokens=N_SILENT, sampling=GREEDY, logit_bias=SILENT)
    pieces, stats = _run(engine, req)
    # the bias really produced silent tokens: all of them sampled, none with text
    assert stats.tokens == N_SILENT and stats.stop_reason == "length"
    assert stats.text == "" and pieces == []
    assert engine.tokens_received == N_SILENT
    # compare's scoring pass over such a reply (teacher-forced control tokens)
    result = engine.request(ScoreRequest(tokens=[1] + [IM_START] * N_SILENT, start=1))
    assert len(result.nll) == N_SILENT


def test_cancel_lands_within_a_few_silent_tokens(engine):
    engine.load(modelfactory.model_path("Q8_0"), n_ctx=2048, n_threads=1)
    req = GenerateRequest(
        messages=HELLO, max_tokens=1500, sampling=GREEDY, logit_bias=SILENT, ignore_eos=True
    )
    at_cancel: list[int] = []

    def cancel_soon() -> None:
        deadline = time.monotonic() + 30
        while engine.tokens_received < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
        at_cancel.append(engine.tokens_received)
        engine.cancel()

    t = threading.Thread(target=cancel_soon)
    t.start()
    _, stats = _run(engine, req)
    t.join(5)
    assert stats.stop_reason == "cancelled" and stats.text == ""
    assert at_cancel and at_cancel[0] >= 3
    assert stats.tokens - at_cancel[0] <= STREAM_WINDOW + 1


def test_logit_bias_changes_what_is_sampled(engine):
    # guards the tests above: without the bias the same request writes text
    engine.load(modelfactory.model_path("Q8_0"), n_ctx=512, n_threads=1)
    _, plain = _run(
        engine, GenerateRequest(messages=HELLO, max_tokens=12, sampling=GREEDY, ignore_eos=True)
    )
    assert plain.text != ""
    with pytest.raises(EngineError, match="outside the vocabulary"):
        _run(engine, GenerateRequest(messages=HELLO, max_tokens=2, logit_bias={10**6: 1.0}))


def test_a_silent_child_is_stopped_with_a_timeout(tmp_path, tiny_models):
    eng = Engine(log_dir=tmp_path / "logs", stall_timeout_s=2)
    try:
        eng.load(tiny_models["Q4_0"], n_ctx=256, n_threads=1)
        t0 = time.monotonic()
        with pytest.raises(EngineCrashed) as err:
            eng.debug_crash("hang")
        assert time.monotonic() - t0 < 15
        assert err.value.kind == ErrorKind.TIMEOUT and "no progress for 2 s" in str(err.value)
        assert not eng.alive
        eng.load(tiny_models["Q4_0"], n_ctx=256, n_threads=1)  # a fresh child takes over
        _, stats = _run(eng, GenerateRequest(messages=HELLO, max_tokens=3, sampling=GREEDY))
        assert stats.tokens > 0
    finally:
        eng.close()


def test_memory_limit_stops_the_child_and_says_so(tmp_path, tiny_models):
    eng = Engine(log_dir=tmp_path / "logs", memory_limit_bytes=700 * 1024**2)
    try:
        eng.load(tiny_models["Q4_0"], n_ctx=256, n_threads=1)
        with pytest.raises(EngineCrashed) as err:
            eng.debug_crash("alloc")
        assert err.value.kind == ErrorKind.LIMIT
        assert "exceeded its memory limit" in str(err.value)
        assert "SIGKILL" not in str(err.value)  # the cause, not a guess from the signal
        assert not eng.alive
    finally:
        eng.close()


NESTED = (
    "{% for m in messages %}{% for i in range(100000) %}{% for j in range(100000) %}"
    "{{ i }}{% endfor %}{% endfor %}{% endfor %}"
)


def test_a_template_that_loops_for_ever_is_stopped_after_5_s(engine):
    shape = replace(modelfactory.TINY, chat_template=NESTED)
    engine.load(modelfactory.model_path("F16", shape), n_ctx=256, n_threads=1)
    t0 = time.monotonic()
    with pytest.raises(EngineError) as err:
        _run(engine, GenerateRequest(messages=HELLO, max_tokens=2))
    assert time.monotonic() - t0 < 12
    assert err.value.kind == ErrorKind.TEMPLATE
    assert "the chat template took longer than 5 s" in str(err.value)
    assert engine.alive and engine.loaded is not None  # the child stopped its own render


def test_a_template_building_a_huge_string_is_refused(engine):
    shape = replace(modelfactory.TINY, chat_template="{{ 'a' * 300000000 }}")
    engine.load(modelfactory.model_path("F16", shape), n_ctx=256, n_threads=1)
    t0 = time.monotonic()
    with pytest.raises(EngineError) as err:
        _run(engine, GenerateRequest(messages=HELLO, max_tokens=2))
    assert time.monotonic() - t0 < 5
    assert err.value.kind == ErrorKind.TEMPLATE
    assert "300,000,000" in str(err.value) and "limit" in str(err.value)
    assert engine.alive


def test_an_unknown_cache_type_is_refused_and_the_loaded_model_kept(engine):
    path = modelfactory.model_path("Q8_0")
    engine.load(path, n_ctx=256, n_threads=1)
    with pytest.raises(EngineError, match="unknown KV cache type q3_x/f16"):
        engine.load(path, n_ctx=256, n_threads=1, memory=MemorySettings(type_k="q3_x"))
    # refused before the loaded model was let go: it still answers
    _, stats = _run(engine, GenerateRequest(messages=HELLO, max_tokens=3, sampling=GREEDY))
    assert stats.tokens == 3

"""The engine process on real llama.cpp with generated models: streaming, cancel, crashes, bad files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from app.core.engine import Engine, EngineCrashed, EngineError, GenerationStats, Sampling
from tests import modelfactory

GREEDY = Sampling.preset("greedy")
HELLO = [{"role": "user", "content": "Tell me about the model and its memory."}]


@pytest.fixture
def engine(tmp_path):
    eng = Engine(log_dir=tmp_path / "logs")
    yield eng
    eng.close()


def _collect(items) -> tuple[list[str], GenerationStats]:
    pieces: list[str] = []
    stats = None
    for item in items:
        if isinstance(item, GenerationStats):
            stats = item
        else:
            pieces.append(item)
    assert stats is not None
    return pieces, stats


@pytest.mark.parametrize("quant", modelfactory.QUANTS)
def test_stream_matches_non_streamed_run_on_every_quant(engine, tiny_models, quant):
    info = engine.load(tiny_models[quant], n_ctx=512)
    assert info.n_ctx >= 512 and info.chat_template
    seeded = Sampling(temperature=0.8, seed=7)
    pieces, streamed = _collect(engine.chat(HELLO, max_tokens=24, sampling=seeded))
    assert streamed.tokens > 0 and len(pieces) > 0
    assert "".join(pieces) == streamed.text
    _, plain = _collect(engine.chat(HELLO, max_tokens=24, sampling=seeded, stream=False))
    assert plain.text == streamed.text and plain.tokens == streamed.tokens
    assert streamed.ttft_s > 0 and streamed.prompt_tokens > 5


def test_different_seeds_give_different_replies(engine, tiny_models):
    # Guards the test above: if the seed were ignored or sampling were constant it would still pass.
    engine.load(tiny_models["Q8_0"], n_ctx=512)
    texts = {
        _collect(engine.chat(HELLO, max_tokens=24, sampling=Sampling(temperature=1.0, seed=s)))[
            1
        ].text
        for s in (1, 2, 3)
    }
    assert len(texts) > 1


def test_cancel_stops_a_long_reply_and_engine_stays_usable(engine, tiny_models):
    engine.load(tiny_models["Q4_K_M"], n_ctx=2048)
    received_after_cancel = 0
    cancelled = False
    stats = None
    for item in engine.chat(HELLO, max_tokens=1500, sampling=GREEDY, ignore_eos=True):
        if isinstance(item, GenerationStats):
            stats = item
        elif cancelled:
            received_after_cancel += 1
        else:
            engine.cancel()
            cancelled = True
    assert stats is not None and stats.stop_reason == "cancelled"
    assert received_after_cancel <= 5  # host.STREAM_WINDOW + the token being sampled
    assert stats.tokens < 10
    _, again = _collect(engine.chat(HELLO, max_tokens=8, sampling=GREEDY, ignore_eos=True))
    assert again.tokens == 8 and again.stop_reason == "length"


def test_breaking_out_of_a_stream_leaves_the_engine_clean(engine, tiny_models):
    engine.load(tiny_models["Q4_0"], n_ctx=2048)
    for _ in engine.chat(HELLO, max_tokens=1500, sampling=GREEDY, ignore_eos=True):
        break  # the consumer walks away mid-reply
    _, stats = _collect(engine.chat(HELLO, max_tokens=5, sampling=GREEDY, ignore_eos=True))
    assert stats.tokens == 5


def test_sigkill_is_reported_and_a_fresh_load_works(engine, tiny_models):
    engine.load(tiny_models["Q8_0"], n_ctx=512)
    with pytest.raises(EngineCrashed) as err:
        for i, _item in enumerate(
            engine.chat(HELLO, max_tokens=1000, sampling=GREEDY, ignore_eos=True)
        ):
            if i == 2:
                os.kill(engine.pid, signal.SIGKILL)
    assert "SIGKILL" in str(err.value) and err.value.exitcode == -signal.SIGKILL
    assert not engine.alive
    engine.load(tiny_models["Q8_0"], n_ctx=512)
    assert (
        _collect(engine.chat(HELLO, max_tokens=4, sampling=GREEDY, ignore_eos=True))[1].tokens == 4
    )


def test_abort_inside_llama_cpp_is_reported_and_a_fresh_load_works(engine, tiny_models):
    engine.load(tiny_models["Q8_0"], n_ctx=512)
    with pytest.raises(EngineCrashed) as err:
        engine.debug_crash("abort")
    assert err.value.exitcode == -signal.SIGABRT
    message = str(err.value)
    assert "aborted inside llama.cpp" in message and "deliberate abort" in message
    engine.load(tiny_models["Q8_0"], n_ctx=512)
    assert (
        _collect(engine.chat(HELLO, max_tokens=3, sampling=GREEDY, ignore_eos=True))[1].tokens == 3
    )


def _bad_copy(src: Path, dst: Path, how: str) -> Path:
    data = bytearray(src.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "not_gguf":
        data = bytearray(b"PK\x03\x04 this is a zip file, not a model" * 100)
    elif how == "corrupt_header":
        data[16:24] = b"\xff" * 8  # the metadata count: an absurd number
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize(
    ("how", "words"),
    [
        ("truncated", "truncated"),
        ("not_gguf", "not a GGUF file"),
        ("corrupt_header", "corrupted header"),
    ],
)
def test_bad_files_give_a_clear_message(engine, tiny_models, tmp_path, how, words):
    bad = _bad_copy(Path(tiny_models["Q4_0"]), tmp_path / f"{how}.gguf", how)
    with pytest.raises(EngineError) as err:
        engine.load(bad, n_ctx=512)
    assert not isinstance(err.value, EngineCrashed)
    assert err.value.kind == "load" and words in str(err.value)
    engine.load(tiny_models["Q4_0"], n_ctx=512)  # the same engine carries on
    assert (
        _collect(engine.chat(HELLO, max_tokens=2, sampling=GREEDY, ignore_eos=True))[1].tokens == 2
    )


def test_missing_file_is_a_clear_error(engine, tmp_path):
    with pytest.raises(EngineError, match="cannot open"):
        engine.load(tmp_path / "nope.gguf")


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.system('touch MARKER') }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}{% if c.__name__ == 'Popen' %}"
        "{{ c(['touch', 'MARKER']) }}{% endif %}{% endfor %}",
    ],
)
def test_hostile_chat_template_cannot_escape_the_sandbox(engine, tmp_path, template):
    marker = tmp_path / "pwned"
    shape = replace(modelfactory.TINY, chat_template=template.replace("MARKER", str(marker)))
    model = modelfactory.model_path("F16", shape)
    engine.load(model, n_ctx=256)
    with pytest.raises(EngineError) as err:
        _collect(engine.chat(HELLO, max_tokens=2))
    assert err.value.kind == "template"
    assert not marker.exists()
    assert engine.alive


def test_prompt_longer_than_context_is_refused(engine, tiny_models):
    engine.load(tiny_models["Q8_0"], n_ctx=256)
    long = [{"role": "user", "content": "memory model quant " * 400}]
    with pytest.raises(EngineError, match="context holds"):
        _collect(engine.chat(long, max_tokens=4))


def test_parent_never_imports_llama_cpp(tiny_models):
    code = (
        "import sys\n"
        "from app.core.engine import Engine, Sampling\n"
        "with Engine() as e:\n"
        f"    e.load({str(tiny_models['Q4_0'])!r}, n_ctx=256)\n"
        "    list(e.chat([{'role': 'user', 'content': 'hi'}], max_tokens=3))\n"
        "assert 'llama_cpp' not in sys.modules, 'parent imported llama_cpp'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_cli_chat_json(tiny_models):
    out = subprocess.run(
        [sys.executable, "-m", "app", "chat", str(tiny_models["Q4_K_M"]), "--prompt", "hello",
         "--max-tokens", "6", "--preset", "greedy", "--ctx", "512", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("text", "tokens", "ttft_s", "prompt_tok_s", "gen_tok_s"):
        assert key in result
    assert result["tokens"] == 6 and result["gen_tok_s"] > 0


def test_cli_chat_bad_file_exits_nonzero(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_text("hello")
    out = subprocess.run(
        [sys.executable, "-m", "app", "chat", str(bad), "--prompt", "hi"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "not a GGUF file" in out.stderr


def test_a_follow_up_turn_reuses_the_cached_prompt_prefix(engine, tiny_models):
    engine.load(tiny_models["Q8_0"], n_ctx=1024)
    _, first = _collect(engine.chat(HELLO, max_tokens=6, sampling=GREEDY, ignore_eos=True))
    assert first.cached_prompt_tokens == 0
    follow_up = [*HELLO, {"role": "assistant", "content": first.text}]
    follow_up.append({"role": "user", "content": "And the cache?"})
    _, second = _collect(engine.chat(follow_up, max_tokens=4, sampling=GREEDY, ignore_eos=True))
    # the first turn's prompt is still in the KV cache: only the new part is evaluated
    assert second.cached_prompt_tokens >= first.prompt_tokens - 1
    assert second.cached_prompt_tokens < second.prompt_tokens

"""Prompt formats on real llama.cpp: the file's template, llama.cpp's built-in one, completion mode.

Plus what a load says about a broken file: the llama.cpp lines that name the cause, and weights
that decode to NaN.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from app.core.chat_format import ReasoningSplitter, builtin_for, split_reasoning
from app.core.engine import Engine, EngineError, GenerationStats, Sampling
from app.core.engine.protocol import RenderRequest, TokenizeRequest
from app.core.errors import ErrorKind
from tests import modelfactory

GREEDY = Sampling.preset("greedy")
HI = [{"role": "user", "content": "The capital of France is"}]
ROLE_LABEL = re.compile(r"\b(user|assistant|system|model)\s*:", re.IGNORECASE)


@pytest.fixture
def engine(tmp_path):
    eng = Engine(log_dir=tmp_path / "logs", stall_timeout_s=30)
    yield eng
    eng.close()


def _no_template(name: str):
    return modelfactory.model_path("Q8_0", replace(modelfactory.TINY, chat_template="", name=name))


def _reply(engine: Engine, messages=HI, n: int = 24) -> GenerationStats:
    stats = None
    for item in engine.chat(messages, max_tokens=n, sampling=GREEDY, ignore_eos=True):
        if isinstance(item, GenerationStats):
            stats = item
    assert stats is not None
    return stats


@pytest.mark.parametrize(
    ("name", "fmt", "start"),
    [
        (
            "Qwen2.5-tiny",
            "builtin:chatml",
            "<|im_start|>user\nThe capital of France is<|im_end|>\n",
        ),
        ("gemma-3-tiny", "builtin:gemma", "<start_of_turn>user\nThe capital of France is"),
    ],
)
def test_a_known_family_without_template_gets_llama_cpps_builtin_format(engine, name, fmt, start):
    info = engine.load(_no_template(name), n_ctx=512, n_threads=1)
    assert info.chat_template is None and info.chat_format == fmt
    rendered = engine.request(RenderRequest(HI))
    assert rendered.startswith(start)
    stats = _reply(engine)
    assert stats.chat_format == fmt and stats.tokens > 0
    assert not ROLE_LABEL.search(rendered) and not ROLE_LABEL.search(stats.text)


def test_an_unknown_family_runs_in_completion_mode(engine):
    info = engine.load(_no_template("quantdesk-nofamily"), n_ctx=512, n_threads=1)
    assert info.chat_format == "completion"
    system = [{"role": "system", "content": "Geography."}, *HI]
    assert engine.request(RenderRequest(HI)) == "The capital of France is"
    assert engine.request(RenderRequest(system)) == "Geography.\n\nThe capital of France is"
    stats = _reply(engine)
    assert stats.chat_format == "completion" and stats.text
    assert not ROLE_LABEL.search(stats.text)
    # the prompt is the text itself plus BOS: no role or turn markers were added
    assert stats.prompt_tokens == len(engine.request(TokenizeRequest("The capital of France is")))


def test_the_files_template_wins_and_a_format_can_be_forced(engine, tiny_models):
    info = engine.load(tiny_models["Q8_0"], n_ctx=512, n_threads=1)
    assert info.chat_format == "gguf"
    assert engine.request(RenderRequest(HI)).endswith("<|im_start|>assistant\n")
    info = engine.load(tiny_models["Q8_0"], n_ctx=512, n_threads=1, chat_format="completion")
    assert info.chat_format == "completion"
    assert engine.request(RenderRequest(HI)) == "The capital of France is"
    info = engine.load(tiny_models["Q8_0"], n_ctx=512, n_threads=1, chat_format="builtin:llama3")
    assert engine.request(RenderRequest(HI)).startswith("<|start_header_id|>user<|end_header_id|>")
    with pytest.raises(EngineError, match="no built-in chat template 'nope'"):
        engine.load(tiny_models["Q8_0"], n_ctx=512, chat_format="builtin:nope")
    with pytest.raises(EngineError, match="has no chat template"):
        engine.load(_no_template("quantdesk-nofamily"), n_ctx=512, chat_format="gguf")


def test_family_table():
    assert builtin_for({"general.architecture": "gemma3"}) == "gemma"
    assert (
        builtin_for({"general.architecture": "llama", "general.name": "Llama-3.2-1B"}) == "llama3"
    )
    assert (
        builtin_for({"general.architecture": "llama", "tokenizer.ggml.pre": "llama-bpe"})
        == "llama3"
    )
    assert builtin_for({"general.architecture": "llama", "general.name": "quantdesk"}) is None


def test_reasoning_splitter_streams_think_blocks_apart():
    sp = ReasoningSplitter()
    parts = []
    for piece in ["Sure. <th", "ink>\nfirst ", "step</th", "ink>\n\nThe answer", " is 4. <b>"]:
        parts += sp.feed(piece)
    parts += sp.finish()
    reasoning = "".join(p.text for p in parts if p.kind == "reasoning")
    answer = "".join(p.text for p in parts if p.kind == "answer")
    assert reasoning == "first step" and answer == "Sure. The answer is 4. <b>"
    assert all("<" not in p.text or p.text.endswith("<b>") for p in parts)
    # a prompt that opened the block: the reply holds only the closing tag
    assert split_reasoning("hmm</think>\nyes", in_reasoning=True) == ("hmm", "yes")
    assert split_reasoning("no tags at all") == ("", "no tags at all")


def test_reasoning_tokens_are_counted(engine):
    # a template that opens a think block at the end of the prompt, as Qwen3's and R1's do
    template = modelfactory.CHATML_TEMPLATE.replace(
        "'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'"
    )
    shape = replace(modelfactory.TINY, chat_template=template)
    engine.load(modelfactory.model_path("F16", shape), n_ctx=512, n_threads=1)
    stats = _reply(engine, n=10)
    assert "</think>" not in stats.text and stats.reasoning_tokens == stats.tokens == 10
    engine.load(modelfactory.model_path("F16"), n_ctx=512, n_threads=1)
    assert _reply(engine, n=5).reasoning_tokens == 0


def test_weights_that_decode_to_nan_are_called_broken(engine):
    shape = replace(modelfactory.TINY, weight_std=float("nan"), name="quantdesk-nan")
    with pytest.raises(EngineError) as err:
        engine.load(modelfactory.model_path("F16", shape), n_ctx=256, n_threads=1)
    assert err.value.kind == ErrorKind.CORRUPT
    assert "weights are broken" in str(err.value) and "NaN" in str(err.value)
    assert engine.loaded is None and engine.alive


def test_a_load_failure_shows_the_llama_cpp_line_with_the_cause(engine):
    # the header parses, but llama.cpp does not know the tokenizer it names
    shape = replace(
        modelfactory.TINY, name="quantdesk-badtok", metadata=(("tokenizer.ggml.model", "qdtok"),)
    )
    with pytest.raises(EngineError) as err:
        engine.load(modelfactory.model_path("F16", shape), n_ctx=256, n_threads=1)
    message = str(err.value)
    assert err.value.kind == ErrorKind.LOAD
    assert "unknown tokenizer: 'qdtok'" in message  # the cause, not only "failed to load model"
    assert "kv " not in message  # and not the metadata dump around it

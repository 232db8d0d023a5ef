"""The server through the official ``openai`` client: models, chat (streamed and not), completions,
embeddings, and the errors in OpenAI's shapes."""

from __future__ import annotations

import json

import openai
import pytest

from tests.server.conftest import http, name_of

PROMPT = [{"role": "user", "content": "Tell me about the weather and the sea."}]


def test_lists_the_library(client, library):
    ids = [m.id for m in client.models.list().data]
    assert ids == [m.name for m in library.list()]
    assert len(ids) == 3


def test_streamed_pieces_join_to_the_non_streamed_reply(client, tiny_files):
    model = name_of(tiny_files["Q8_0"])
    whole = client.chat.completions.create(
        model=model, messages=PROMPT, max_tokens=40, seed=7, temperature=0.8
    )
    text = whole.choices[0].message.content
    assert text and whole.usage.completion_tokens > 0
    assert whole.choices[0].finish_reason in ("stop", "length")
    stream = client.chat.completions.create(
        model=model,
        messages=PROMPT,
        max_tokens=40,
        seed=7,
        temperature=0.8,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(pieces) > 1
    assert "".join(pieces) == text
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens
    # another seed gives another reply: the seed really reaches the sampler
    other = client.chat.completions.create(
        model=model, messages=PROMPT, max_tokens=40, seed=8, temperature=0.8
    )
    assert other.choices[0].message.content != text


def test_text_completion_and_stop(client, tiny_files):
    model = name_of(tiny_files["Q8_0"]).removesuffix(".gguf")  # the name without .gguf works too
    out = client.completions.create(model=model, prompt="The sea is", max_tokens=30, seed=1)
    text = out.choices[0].text
    assert text and out.usage.prompt_tokens > 0
    # a stop string taken from the reply itself: the reply ends right before it
    word = text.strip().split()[1] if len(text.split()) > 1 else text.strip()[:2]
    cut = client.completions.create(
        model=model, prompt="The sea is", max_tokens=30, seed=1, stop=[word]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert word not in cut.choices[0].text
    assert text.startswith(cut.choices[0].text)


def test_json_object_uses_a_grammar(client, tiny_files):
    out = client.chat.completions.create(
        model=name_of(tiny_files["Q8_0"]),
        messages=PROMPT,
        max_tokens=200,
        seed=3,
        response_format={"type": "json_object"},
    )
    text = out.choices[0].message.content
    assert text.lstrip().startswith("{")
    if out.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_embeddings_of_a_model_that_does_not_embed(client, tiny_files):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=name_of(tiny_files["Q8_0"]), input="hello")
    assert info.value.status_code == 400
    assert "does not embed" in info.value.message


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope.gguf", messages=PROMPT)
    body = info.value.body
    assert body["code"] == "model_not_found" and body["param"] == "model"


def test_prompt_longer_than_the_context_is_400(start_server, tiny_files):
    from openai import OpenAI

    server = start_server(n_ctx=256)  # the planner's smallest context
    with OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=60) as c:
        long = "the sea and the weather " * 200
        for call in (
            lambda: c.completions.create(model=name_of(tiny_files["Q8_0"]), prompt=long),
            lambda: c.chat.completions.create(
                model=name_of(tiny_files["Q8_0"]),
                messages=[{"role": "user", "content": long}],
                stream=True,
            ),
        ):
            with pytest.raises(openai.BadRequestError) as info:
                call()
            assert info.value.body["code"] == "context_length_exceeded"
            assert "256" in info.value.message


def test_max_tokens_over_the_limit_and_bad_params_are_400(client, tiny_files):
    model = name_of(tiny_files["Q8_0"])
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model, messages=PROMPT, max_tokens=10**6)
    assert info.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model, messages=PROMPT, temperature=9)
    assert info.value.body["param"] == "temperature"


def test_api_key(start_server, tiny_files):
    from openai import OpenAI

    server = start_server(api_key="s3cret")
    with OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0, timeout=30) as c:
        with pytest.raises(openai.AuthenticationError) as info:
            c.models.list()
        assert info.value.status_code == 401
    assert http("GET", server.base_url + "/models")[0] == 401
    with OpenAI(base_url=server.base_url, api_key="s3cret", max_retries=0, timeout=30) as c:
        assert len(c.models.list().data) == 3
    # /health answers without the key (it says nothing about the models' contents)
    status, health = http("GET", server.base_url.removesuffix("/v1") + "/health")
    assert status == 200 and health == {"status": "ok"}  # nothing about the models


def test_body_limit_is_413(start_server):
    server = start_server(max_body_bytes=1000)
    status, body = http("POST", server.base_url + "/chat/completions", b"{" + b" " * 5000 + b"}")
    assert status == 413
    assert body["error"]["code"] == "body_too_large"


def test_embeddings_of_a_model_with_a_pooling_layer(client, library, embed_file):
    import math

    for _ in library.import_file(embed_file):
        pass
    before = client.completions.create(
        model=embed_file.name, prompt="The sea and the weather", max_tokens=6, temperature=0, seed=3
    )
    texts = ["the weather and the sea", "the sea and the weather", "ccc ddd eee"]
    out = client.embeddings.create(model=embed_file.name, input=texts)  # base64 on the wire
    vectors = [d.embedding for d in out.data]
    assert [d.index for d in out.data] == [0, 1, 2]
    assert len(vectors[0]) == 256 and out.usage.prompt_tokens > 0
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in vectors)  # normalised
    # floats on the wire give the same vectors; the model still generates after embedding
    plain = client.embeddings.create(model=embed_file.name, input=texts[0], encoding_format="float")
    assert max(abs(a - b) for a, b in zip(plain.data[0].embedding, vectors[0], strict=True)) < 1e-5
    assert vectors[0] != vectors[2]
    reply = client.completions.create(model=embed_file.name, prompt="The sea", max_tokens=5)
    assert reply.usage.completion_tokens > 0
    # an embedding leaves no stale KV cache behind: the same prompt gives the same reply as before
    after = client.completions.create(
        model=embed_file.name, prompt="The sea and the weather", max_tokens=6, temperature=0, seed=3
    )
    assert after.choices[0].text == before.choices[0].text


def _preflight(url: str, origin: str) -> dict[str, str]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, method="OPTIONS")
    req.add_header("Origin", origin)
    req.add_header("Access-Control-Request-Method", "POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return dict(r.headers)
    except urllib.error.HTTPError as exc:
        return dict(exc.headers)


def test_cors_is_off_unless_origins_are_listed(start_server):
    url_of = lambda s: s.base_url + "/chat/completions"  # noqa: E731
    off = start_server()
    assert "access-control-allow-origin" not in {
        k.lower() for k in _preflight(url_of(off), "http://evil.test")
    }
    on = start_server(cors_origins=["http://localhost:3000"])
    allowed = {k.lower(): v for k, v in _preflight(url_of(on), "http://localhost:3000").items()}
    assert allowed["access-control-allow-origin"] == "http://localhost:3000"
    other = {k.lower() for k in _preflight(url_of(on), "http://evil.test")}
    assert "access-control-allow-origin" not in other

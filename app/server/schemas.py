"""OpenAI request bodies in, OpenAI response shapes out.

Bodies are parsed by hand rather than by pydantic models so that every refusal is OpenAI's error
JSON naming the offending ``param``.  Accepted extensions (llama.cpp's server has the same ones):
``top_k``, ``min_p``, ``repeat_penalty`` and ``ignore_eos``.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from app.core.engine.protocol import GenerationStats, Sampling
from app.server.config import ServerOptions
from app.server.errors import ApiError
from app.server.grammar import JSON_OBJECT_GBNF

MAX_STOPS = 4  # as OpenAI


@dataclass
class Parsed:
    """A chat or text completion request, checked."""

    model: str
    messages: list[dict[str, str]] | None
    prompt: str | None
    max_tokens: int | None  # None: the server's default
    sampling: Sampling
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    grammar: str | None = None
    ignore_eos: bool = False


def _number(body: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(f"'{name}' must be a number", param=name, code="invalid_type")
    if not lo <= value <= hi:
        raise ApiError(f"'{name}' must be between {lo} and {hi}, got {value}", param=name)
    return float(value)


def _int(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(f"'{name}' must be an integer", param=name, code="invalid_type")
    if not lo <= value <= hi:
        raise ApiError(f"'{name}' must be between {lo} and {hi}, got {value}", param=name)
    return value


def _content(message: dict[str, Any], i: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ApiError(
                    "only text content parts are supported by local GGUF models",
                    param=f"messages[{i}].content",
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise ApiError("message content must be a string or a list of parts", param=f"messages[{i}]")


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ApiError("'messages' must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise ApiError("each message must be an object", param=f"messages[{i}]")
        role = m.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise ApiError(f"unknown role {role!r}", param=f"messages[{i}].role")
        out.append({"role": str(role), "content": _content(m, i)})
    return out


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ApiError("'stop' must be a string or a list of strings", param="stop")
    if len(stops) > MAX_STOPS:
        raise ApiError(f"at most {MAX_STOPS} stop sequences", param="stop")
    return [s for s in stops if s]


def _grammar(body: dict[str, Any]) -> str | None:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT_GBNF
    raise ApiError(
        f"response_format type {kind!r} is not supported: use 'text' or 'json_object'",
        param="response_format",
    )


def parse(body: Any, options: ServerOptions, *, chat: bool) -> Parsed:
    """A checked request (raises :class:`ApiError` 400 naming the bad ``param``)."""
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError("'model' is required", param="model", code="missing_model")
    messages = prompt = None
    if chat:
        messages = _messages(body)
    else:
        raw = body.get("prompt")
        if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
            raw = raw[0]
        if not isinstance(raw, str):
            raise ApiError("'prompt' must be a string (one prompt per request)", param="prompt")
        prompt = raw
    if body.get("n", 1) != 1:
        raise ApiError("only n=1 is supported", param="n")
    limit = options.max_tokens_limit
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ApiError("'max_tokens' must be a positive integer", param="max_tokens")
        if max_tokens > limit:
            raise ApiError(
                f"max_tokens is {max_tokens}, but this server allows at most {limit}",
                param="max_tokens",
                code="max_tokens_too_large",
            )
    base = Sampling()
    temperature = _number(body, "temperature", 0.0, 2.0)
    top_p = _number(body, "top_p", 0.0, 1.0)
    min_p = _number(body, "min_p", 0.0, 1.0)
    repeat = _number(body, "repeat_penalty", 0.0, 10.0)
    top_k = _int(body, "top_k", 0, 100000)
    seed = _int(body, "seed", -(2**63), 2**63 - 1)
    sampling = Sampling(
        temperature=base.temperature if temperature is None else temperature,
        top_k=base.top_k if top_k is None else top_k,
        top_p=base.top_p if top_p is None else top_p,
        min_p=base.min_p if min_p is None else min_p,
        repeat_penalty=base.repeat_penalty if repeat is None else repeat,
        # No seed: a new one per request, as OpenAI (llama.cpp wants 32 bits).
        seed=secrets.randbelow(2**31) if seed is None else seed % (2**32),
    )
    stream_options = body.get("stream_options") or {}
    return Parsed(
        model=model,
        messages=messages,
        prompt=prompt,
        max_tokens=max_tokens,
        sampling=sampling,
        stop=_stop(body),
        stream=bool(body.get("stream", False)),
        include_usage=bool(
            isinstance(stream_options, dict) and stream_options.get("include_usage")
        ),
        grammar=_grammar(body),
        ignore_eos=bool(body.get("ignore_eos", False)),
    )


# ---- responses ------------------------------------------------------------------------------
def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def finish_reason(stats: GenerationStats | None, stopped: bool) -> str:
    if stopped:
        return "stop"
    if stats is None:
        return "stop"
    return "length" if stats.stop_reason in ("length", "context") else "stop"


def usage(prompt_tokens: int, tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": tokens,
        "total_tokens": prompt_tokens + tokens,
    }


def completion(
    rid: str, model: str, text: str, finish: str, use: dict[str, int], *, chat: bool
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [choice],
        "usage": use,
    }


def chunk(
    rid: str,
    model: str,
    text: str | None,
    finish: str | None,
    *,
    chat: bool,
    role: bool = False,
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if chat:
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    return {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [choice],
    }


def usage_chunk(rid: str, model: str, use: dict[str, int], *, chat: bool) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": use,
    }


class StopScanner:
    """The caller's ``stop`` strings over a stream: emit what is safe, hold a possible prefix."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.pending = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """Text to send now, and whether a stop string was found (nothing after it is sent)."""
        if not self.stops:
            return piece, False
        self.pending += piece
        for stop in self.stops:
            i = self.pending.find(stop)
            if i >= 0:
                out, self.pending = self.pending[:i], ""
                return out, True
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


# ---- embeddings -----------------------------------------------------------------------------
MAX_INPUTS = 256


def parse_embeddings(body: Any) -> tuple[list[str], str]:
    """The texts and the encoding format ("float" or "base64") of an embeddings request."""
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object")
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ApiError("'input' must be a string or a list of strings", param="input")
    if len(texts) > MAX_INPUTS:
        raise ApiError(f"at most {MAX_INPUTS} inputs per request", param="input")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise ApiError("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    if body.get("dimensions") is not None:
        raise ApiError("'dimensions' is not supported by local models", param="dimensions")
    return texts, fmt


def embeddings(model: str, vectors: list[list[float]], tokens: int, fmt: str) -> dict[str, Any]:
    import base64
    import struct

    def encode(v: list[float]) -> Any:
        if fmt == "base64":  # little-endian float32, as OpenAI's (and its client's default)
            return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
        return v

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }

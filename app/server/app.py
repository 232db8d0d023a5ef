"""The routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
``/health``, in OpenAI's shapes.

A generation runs in a worker thread (the engine client blocks) and hands its pieces to the event
loop through a queue.  The response waits for the first event before it starts: a request that
fails to plan, load or fit its prompt gets a proper status and OpenAI's error JSON even when it
asked for a stream.  A client that disconnects mid-stream cancels the stream; the engine then stops
after at most a few more tokens (its stream window).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse

import app as app_pkg
from app.core.cancel import CancelToken
from app.core.engine import EngineError, GenerationStats
from app.core.engine.protocol import GenerateRequest
from app.core.errors import ErrorKind, QuantDeskError
from app.server import schemas
from app.server.config import ServerOptions
from app.server.errors import ApiError, from_exception
from app.server.models import ModelPool, RequestRecord, Slot

WORKERS = 64  # generations and loads waiting or running at once (queued requests hold one)
AHEAD = 8  # text pieces the engine may be ahead of the response: a disconnect stops it soon
_END = object()


@dataclass
class _Ready:
    """The model is held and the prompt checked: the response may start."""

    slot: Slot
    prompt_tokens: int


def _authorized(request: Request, api_key: str) -> bool:
    """``Authorization: Bearer KEY`` with the right key (compared in constant time)."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        key.strip().encode(), api_key.encode()
    )


def _error(exc: BaseException) -> JSONResponse:
    err = from_exception(exc)
    return JSONResponse(err.body(), status_code=err.status)


async def _read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refusing more than ``limit`` bytes (413) before reading them all."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(
            f"the request body is over the limit of {limit} bytes", 413, code="body_too_large"
        )
    chunks, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise ApiError(
                f"the request body is over the limit of {limit} bytes", 413, code="body_too_large"
            )
        chunks.append(part)
    try:
        return json.loads(b"".join(chunks) or b"null")
    except ValueError as exc:
        raise ApiError(f"the request body is not valid JSON: {exc}") from exc


class _Job:
    """One generation: a worker thread drives the engine, the event loop reads the queue.

    The log record is written by whichever side ends last (:meth:`settle`): the worker knows the
    engine's stats, the response side how the reply ended -- after a disconnect the response side
    is cancelled long before the engine's final count arrives.
    """

    def __init__(
        self, pool: ModelPool, loop: asyncio.AbstractEventLoop, record: RequestRecord
    ) -> None:
        self.pool = pool
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cancel = CancelToken()
        self.record = record
        self._sides: set[str] = set()
        self._lock = threading.Lock()
        self._room = threading.Semaphore(AHEAD)

    def put_piece(self, piece: str) -> None:
        """Queue a text piece once the response has taken the earlier ones (or on a cancel):
        the engine then waits too (its own stream window), never far ahead of the socket."""
        while not self._room.acquire(timeout=0.05):
            if self.cancel.is_set() or self.pool.closed:
                break
        self.put(piece)

    def taken(self) -> None:
        """The response took a text piece off the queue."""
        self._room.release()

    def put(self, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server stopped
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def stop(self) -> None:
        self.pool.cancel(self.cancel)

    def settle(self, side: str, **fields: Any) -> None:
        """Add what one side ("worker" or "response") knows to the record, once per side; the
        second side writes it to the log."""
        with self._lock:
            if side in self._sides:
                return
            self._sides.add(side)
            for name, value in fields.items():
                setattr(self.record, name, value)
            done = len(self._sides) == 2
        if done:
            self.record.total_s = time.time() - self.record.at
            self.pool.record(self.record)


class _JobStream(StreamingResponse):
    """A stream that always stops its job when the response ends, however it ends.

    After a disconnect Starlette cancels the sending task while the body generator may sit at a
    ``yield``: its ``finally`` would then run only when the generator is collected, with the
    engine generating all along.  Closing it here runs that ``finally`` at once.
    """

    def __init__(self, job: _Job, body: AsyncIterator[str], **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        self.job = job
        self._source = body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.stop()
            with contextlib.suppress(RuntimeError):  # still running: its own finally will run
                await self._source.aclose()  # type: ignore[attr-defined]
            self.job.settle("response", finish="disconnected", status=499)


def create_app(pool: ModelPool, options: ServerOptions | None = None) -> FastAPI:
    """The FastAPI app serving ``pool``."""
    opts = options or pool.options
    api = FastAPI(
        title="QuantDesk local server",
        version=app_pkg.__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="quantdesk-server")
    api.state.executor = executor
    api.state.pool = pool
    if opts.cors_origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=list(opts.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @api.middleware("http")
    async def _auth(request: Request, call_next: Callable[[Request], Any]) -> Response:
        guarded = request.url.path.startswith("/v1") and request.method != "OPTIONS"
        if opts.api_key and guarded and not _authorized(request, opts.api_key):
            err = ApiError(
                "Incorrect or missing API key: send 'Authorization: Bearer KEY'.",
                401,
                code="invalid_api_key",
                kind=ErrorKind.AUTH,
            )
            return JSONResponse(err.body(), status_code=401)
        response: Response = await call_next(request)
        return response

    @api.exception_handler(QuantDeskError)
    async def _api_error(request: Request, exc: QuantDeskError) -> JSONResponse:
        return _error(exc)

    @api.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        if opts.api_key and not _authorized(request, opts.api_key):
            return {"status": "ok"}  # without the key: alive, and nothing about the models
        loaded = pool.loaded()
        return {
            "status": "ok",
            "version": app_pkg.__version__,
            "loaded": [{"model": m.name, "n_ctx": m.n_ctx, "busy": m.busy} for m in loaded],
        }

    @api.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        models = await asyncio.get_running_loop().run_in_executor(executor, pool.models)
        loaded = {m.name for m in pool.loaded()}
        return {
            "object": "list",
            "data": [
                {
                    "id": m.name,
                    "object": "model",
                    "created": _created(m.added_at),
                    "owned_by": m.repo_id.split("/")[0] if m.repo_id else "local",
                    "quantdesk": {
                        "library_id": m.id,
                        "path": str(m.path),
                        "quant": m.quant,
                        "size_bytes": m.size_bytes,
                        "loaded": m.name in loaded,
                    },
                }
                for m in models
            ],
        }

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _complete(request, chat=True)

    @api.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _complete(request, chat=False)

    @api.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        body = await _read_json(request, opts.max_body_bytes)
        texts, fmt = schemas.parse_embeddings(body)
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(executor, pool.resolve, str(body.get("model") or ""))
        started = time.time()
        try:
            result = await loop.run_in_executor(executor, pool.embed, model, texts)
        except EngineError as exc:
            if exc.kind == ErrorKind.UNSUPPORTED:
                raise ApiError(
                    f"{model.name} does not embed: it has no pooling layer (a text-generation "
                    "model). Use an embedding model.",
                    400,
                    param="model",
                    code="model_does_not_embed",
                ) from exc
            raise
        n = int(result["prompt_tokens"])
        pool.record(
            RequestRecord(
                started,
                "/v1/embeddings",
                model.name,
                200,
                prompt_tokens=n,
                total_s=time.time() - started,
                finish=f"{len(texts)} vectors",
            )
        )
        return JSONResponse(schemas.embeddings(model.name, result["embeddings"], n, fmt))

    async def _complete(request: Request, *, chat: bool) -> Response:
        started = time.time()
        endpoint = request.url.path
        body = await _read_json(request, opts.max_body_bytes)
        parsed = schemas.parse(body, opts, chat=chat)
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(executor, pool.resolve, parsed.model)
        record = RequestRecord(started, endpoint, model.name, 200, stream=parsed.stream)
        job = _Job(pool, loop, record)
        executor.submit(_work, pool, job, model, parsed)
        try:
            first = await job.queue.get()
        except asyncio.CancelledError:
            job.stop()
            job.settle("response", status=499, finish="disconnected")
            raise
        if isinstance(first, BaseException):
            err = from_exception(first)
            job.settle("response", status=err.status, finish=err.message[:200])
            return JSONResponse(err.body(), status_code=err.status)
        assert isinstance(first, _Ready)
        rid = schemas.new_id(chat)
        if parsed.stream:
            return _JobStream(
                job,
                _sse(job, parsed, model.name, rid, chat=chat),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _whole(job, first, parsed, model.name, rid, chat=chat)

    async def _whole(
        job: _Job, ready: _Ready, parsed: schemas.Parsed, name: str, rid: str, *, chat: bool
    ) -> Response:
        scanner = schemas.StopScanner(parsed.stop)
        text, stats, stopped = "", None, False
        try:
            while True:
                item = await job.queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, GenerationStats):
                    stats = item
                    continue
                job.taken()
                if not stopped:
                    out, stopped = scanner.feed(item)
                    text += out
                    if stopped:
                        job.stop()
        except asyncio.CancelledError:
            job.stop()
            job.settle("response", status=499, finish="disconnected")
            raise
        except Exception as exc:
            err = from_exception(exc)
            job.settle("response", status=err.status, finish=err.message[:200])
            return JSONResponse(err.body(), status_code=err.status)
        if not stopped:
            text += scanner.flush()
        finish = schemas.finish_reason(stats, stopped)
        job.settle("response", finish=finish)
        prompt = stats.prompt_tokens if stats else ready.prompt_tokens
        use = schemas.usage(prompt, stats.tokens if stats else 0)
        return JSONResponse(schemas.completion(rid, name, text, finish, use, chat=chat))

    async def _sse(
        job: _Job, parsed: schemas.Parsed, name: str, rid: str, *, chat: bool
    ) -> AsyncIterator[str]:
        scanner = schemas.StopScanner(parsed.stop)
        stats: GenerationStats | None = None
        stopped, finish = False, "disconnected"

        def event(obj: dict[str, Any]) -> str:
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        try:
            if chat:
                yield event(schemas.chunk(rid, name, "", None, chat=True, role=True))
            while True:
                item = await job.queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    # Headers are sent: the error travels as an event, as OpenAI's does.
                    err = from_exception(item)
                    finish = err.message[:200]
                    yield event(err.body())
                    yield "data: [DONE]\n\n"
                    return
                if isinstance(item, GenerationStats):
                    stats = item
                    continue
                job.taken()
                if stopped:
                    continue
                out, stopped = scanner.feed(item)
                if stopped:
                    job.stop()
                if out:
                    yield event(schemas.chunk(rid, name, out, None, chat=chat))
                    job.record.sent += 1
            if not stopped and (tail := scanner.flush()):
                yield event(schemas.chunk(rid, name, tail, None, chat=chat))
            finish = schemas.finish_reason(stats, stopped)
            yield event(schemas.chunk(rid, name, None, finish, chat=chat))
            if parsed.include_usage and stats is not None:
                use = schemas.usage(stats.prompt_tokens, stats.tokens)
                yield event(schemas.usage_chunk(rid, name, use, chat=chat))
            yield "data: [DONE]\n\n"
        finally:
            # Also reached when the client went away (the stream is cancelled or closed): stop
            # the engine now; the worker's final stats complete the log record.
            job.stop()
            job.settle("response", finish=finish, status=200 if finish != "disconnected" else 499)

    return api


def _work(pool: ModelPool, job: _Job, model: Any, parsed: schemas.Parsed) -> None:
    """The worker thread of one generation: hold the model, check the prompt, stream."""
    stats: GenerationStats | None = None
    prompt_tokens = 0
    try:
        with pool.use(model, job.cancel) as slot:
            prompt_tokens = _check_prompt(pool, slot, parsed)
            limit = max(1, slot.n_ctx - prompt_tokens)
            max_tokens = min(parsed.max_tokens or pool.options.default_max_tokens, limit)
            req = GenerateRequest(
                messages=parsed.messages,
                prompt=parsed.prompt,
                max_tokens=max_tokens,
                sampling=parsed.sampling,
                stream=True,
                ignore_eos=parsed.ignore_eos,
                grammar=parsed.grammar,
            )
            job.put(_Ready(slot, prompt_tokens))
            for item in pool.generate(slot, req, job.cancel):
                if isinstance(item, GenerationStats):
                    stats = item
                    job.put(item)
                else:
                    job.put_piece(item)
    except BaseException as exc:  # every failure reaches the client as OpenAI's error JSON
        job.put(exc)
    finally:
        job.put(_END)
        job.settle(
            "worker",
            prompt_tokens=stats.prompt_tokens if stats else prompt_tokens,
            tokens=stats.tokens if stats else 0,
            ttft_s=stats.ttft_s if stats else 0.0,
            gen_tok_s=stats.gen_tok_s if stats else 0.0,
        )


def _check_prompt(pool: ModelPool, slot: Slot, parsed: schemas.Parsed) -> int:
    """The prompt's token count, refusing one the context cannot hold (400).

    A raw prompt is counted exactly; a chat is counted over its messages' text, a lower bound of
    what the template makes of it (the engine refuses the rest with the same message).
    """
    text = (
        parsed.prompt
        if parsed.prompt is not None
        else "\n".join(m["content"] for m in parsed.messages or [])
    )
    n = len(pool.tokenize(slot, text))
    if n >= slot.n_ctx:
        raise ApiError(
            f"This model's context holds {slot.n_ctx} tokens, but the prompt is {n} tokens. "
            "Shorten the prompt or the conversation.",
            400,
            param="messages" if parsed.messages is not None else "prompt",
            code="context_length_exceeded",
        )
    return n


def _created(added_at: str) -> int:
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(added_at).timestamp())
    except ValueError:
        return 0

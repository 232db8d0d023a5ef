"""Child side of the engine: owns llama.cpp, answers requests from the parent pipe.

This is the only module (with the handlers it imports) that imports llama_cpp.  Its stderr goes to a
log file so that llama.cpp's last words (``GGML_ASSERT ...``) can be shown when it dies.
"""

from __future__ import annotations

import codecs
import importlib
import os
import sys
import time
from typing import Any

from app.core.engine.protocol import (
    DebugCrashRequest,
    Done,
    Failed,
    GenerateRequest,
    GenerationStats,
    LoadedInfo,
    LoadRequest,
    Request,
    Token,
    TokenizeRequest,
    UnloadRequest,
)

# Requests whose handlers live in their own modules: "module:function", called as f(state, body).
_EXTERNAL = {
    "ScoreRequest": "app.core.engine.host_score:handle",
    "DryRunRequest": "app.core.engine.host_dryrun:handle",
}


class RequestError(Exception):
    """A request the child cannot serve; ``kind`` travels to the parent with the message."""

    def __init__(self, message: str, kind: str = "request") -> None:
        super().__init__(message)
        self.kind = kind


def peak_rss() -> int:
    """Peak resident set size of this process, in bytes."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except ImportError:  # Windows
        import psutil

        return int(getattr(psutil.Process().memory_info(), "peak_wset", 0))


def current_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


STREAM_WINDOW = 4  # tokens sent but not yet read by the parent


class State:
    """What the child holds: the llama_cpp module, the loaded model, captured llama.cpp log."""

    def __init__(self, conn: Any, cancel: Any, consumed: Any) -> None:
        self.conn = conn
        self.cancel = cancel
        self.consumed = consumed  # shared counter: tokens the parent has read
        self.llm: Any = None
        self.load: LoadRequest | None = None
        self.formatter: Any = None
        self.log_lines: list[str] = []
        import llama_cpp

        self.llama_cpp = llama_cpp
        self._install_log_capture()

    def _install_log_capture(self) -> None:
        """Keep llama.cpp's log: buffer sizes are read from it, and it goes to the log file."""
        lc = self.llama_cpp
        partial: list[str] = []

        @lc.llama_log_callback
        def _cb(level: int, text: bytes, user_data: Any) -> None:
            s = text.decode("utf-8", errors="replace")
            partial.append(s)
            if s.endswith("\n"):
                line = "".join(partial)
                partial.clear()
                self.log_lines.append(line.rstrip("\n"))
                if len(self.log_lines) > 5000:
                    del self.log_lines[:2500]
                sys.stderr.write(line)

        self._log_cb = _cb  # keep a reference: ctypes would free the thunk otherwise
        lc.llama_log_set(_cb, None)


def _buffers(lines: list[str]) -> dict[str, int]:
    """Parse ``... <NAME> buffer size = X MiB`` lines into bytes (last value of each name wins)."""
    import re

    out: dict[str, int] = {}
    pat = re.compile(r"^\s*(?:\w+:\s*)?(.*?)\s+buffer size\s*=\s*([\d.]+)\s*MiB")
    for line in lines:
        m = pat.match(line)
        if m:
            name = " ".join(m.group(1).split())
            out[name] = int(round(float(m.group(2)) * 1024 * 1024))
    return out


def _load(state: State, req: LoadRequest) -> LoadedInfo:
    from app.core.gguf_header import GGUFError, read_local

    try:
        spec = read_local(req.path)
    except GGUFError as exc:
        raise RequestError(str(exc), "load") from exc
    _unload(state)
    lc = state.llama_cpp
    from app.core.llama_log import memory_caches

        if req.rpc_servers:
            from app.core.rpc import register_servers

            register_servers(req.rpc_servers)  # probes each first: ggml aborts on a dead one
    kv_types = {"f16": 1, "f32": 0, "q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7}
    state.log_lines.clear()
    t0 = time.perf_counter()
    from app.core.engine.host_dryrun import flash_attn_on, moe_load_params

    try:
        # The memory settings are the plan's (PlanOptions): the same ones the dry run used.
        with moe_load_params(state, req.cpu_moe_layers):
            llm = lc.Llama(
                model_path=req.path,
                n_ctx=req.n_ctx,
                n_gpu_layers=req.n_gpu_layers,
                n_threads=req.n_threads,
                tensor_split=list(req.tensor_split) or None,
                n_batch=req.n_batch,
                n_ubatch=req.n_ubatch,
    except QuantDeskError as exc:  # a worker that cannot be reached (app.core.rpc)
        if isinstance(exc, RequestError):
            raise
        raise RequestError(str(exc), "load") from exc
                use_mmap=req.use_mmap,
                type_k=kv_types[req.type_k],
                type_v=kv_types[req.type_v],
                flash_attn=flash_attn_on(req.flash_attn, req.type_v),
                swa_full=req.swa_full,
                verbose=True,
            )
    except ValueError as exc:
        detail = [ln for ln in state.log_lines if "error" in ln.lower() or "failed" in ln.lower()]
        hint = f" ({detail[-1].strip()})" if detail else ""
        raise RequestError(
            f"llama.cpp could not load {os.path.basename(req.path)}{hint}", "load"
        ) from exc
    # Warm up as llama.cpp's own tools do: the first decode sets up threads and graph buffers
    # (0.1-0.4 s even on a tiny model); it belongs to the load, not to the first reply's TTFT.
    bos = llm.token_bos()
    llm.eval([bos if bos >= 0 else 0])
    llm.reset()
    load_s = time.perf_counter() - t0
    state.llm, state.load = llm, req
    state.formatter = None
    template = spec.chat_template
    if template:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        eos = llm._model.token_get_text(llm.token_eos()) if llm.token_eos() >= 0 else ""
        bos = llm._model.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
        state.formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
    return LoadedInfo(
        path=req.path,
        n_ctx=llm.n_ctx(),
        n_ctx_train=spec.n_ctx_train,
        n_gpu_layers=req.n_gpu_layers,
        load_s=load_s,
        chat_template=template,
        metadata={k: str(v)[:2000] for k, v in llm.metadata.items()},
        buffers=_buffers(state.log_lines),
        rss_bytes=current_rss(),
        caches=tuple(memory_caches(state.log_lines)),
    )


def _unload(state: State) -> None:
    if state.llm is not None:
        state.llm.close()
    state.llm = state.formatter = state.load = None


def _prompt(state: State, req: GenerateRequest) -> tuple[str, list[str], bool]:
    """The prompt text, extra stop strings, and whether the template already added BOS."""
    if req.messages is None:
        return req.prompt or "", [], False
    if state.formatter is None:
        # No template in the file: a plain transcript still lets the user talk to it.
        text = "".join(f"{m['role']}: {m['content']}\n" for m in req.messages) + "assistant:"
        return text, ["\nuser:"], False
    try:
        result = state.formatter(messages=req.messages)
    except Exception as exc:  # jinja2's SecurityError, TemplateError, ...
        raise RequestError(
            f"the model's chat template failed or was refused by the sandbox: {type(exc).__name__}: {exc}",
            "template",
        ) from exc
    stops = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
    return result.prompt, [s for s in stops if s], bool(getattr(result, "added_special", False))


def _generate(state: State, rid: int, req: GenerateRequest) -> GenerationStats:
    llm = state.llm
    if llm is None:
        raise RequestError("no model is loaded")
    prompt, stops, added_special = _prompt(state, req)
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=not added_special, special=True)
    n_ctx = llm.n_ctx()
    if len(tokens) >= n_ctx:
        raise RequestError(
            f"the prompt is {len(tokens)} tokens but the context holds {n_ctx}: "
            "shorten the conversation or load the model with a larger context"
        )
    s = req.sampling
    llm.set_seed(s.seed)
    # llama-cpp-python keeps the KV cache of a shared prefix (earlier turns of the chat): only the
    # rest of the prompt is evaluated, and the prompt speed must count only that.
    cached = _common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
    evaluated = max(len(tokens) - cached, 1)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text, pending = "", ""
    n_gen, reason = 0, "length"
    t0 = time.perf_counter()
    t_first = t_last = t0
    vocab = llm._model.vocab
    lc = state.llama_cpp
    for tok in llm.generate(
        tokens,
        temp=s.temperature,
        top_k=s.top_k,
        top_p=s.top_p,
        min_p=s.min_p,
        repeat_penalty=s.repeat_penalty,
        reset=True,
        grammar=_grammar(state, req.grammar),
    ):
        now = time.perf_counter()
        if n_gen == 0:
            t_first = now
        t_last = now
        if not req.ignore_eos and lc.llama_vocab_is_eog(vocab, tok):
            reason = "eos"
            break
        n_gen += 1
        pending += decoder.decode(llm.detokenize([tok], special=False))
        emit, pending, hit = _split_stop(pending, stops)
        if emit:
            text += emit
            if req.stream:
                state.conn.send(Token(rid, emit, n_gen))
        if hit:
            reason = "eos"
            break
        if state.cancel.is_set():
            reason = "cancelled"
            break
        if n_gen >= req.max_tokens:
            break
        if req.stream:
            _wait_for_reader(state, n_gen)
        if len(tokens) + n_gen >= n_ctx:
            reason = "context"
            break
    tail = pending + decoder.decode(b"", final=True) if reason != "eos" else ""
    if tail:
        text += tail
        if req.stream:
            state.conn.send(Token(rid, tail, -1))
    prompt_s = max(t_first - t0, 1e-9)
    gen_s = t_last - t_first
    return GenerationStats(
        text=text,
        tokens=n_gen,
        prompt_tokens=len(tokens),
        ttft_s=t_first - t0,
        prompt_tok_s=evaluated / prompt_s,
        cached_prompt_tokens=len(tokens) - evaluated,
        gen_tok_s=(n_gen - 1) / gen_s if n_gen > 1 and gen_s > 0 else 0.0,
        total_s=time.perf_counter() - t0,
        stop_reason=reason,
        peak_rss_bytes=peak_rss(),
    )


def _grammar(state: State, text: str | None) -> Any:
    """A compiled llama.cpp grammar, or None (a bad grammar is the request's fault)."""
    if not text:
        return None
    try:
        return state.llama_cpp.LlamaGrammar.from_string(text, verbose=False)
    except ValueError as exc:
        raise RequestError(f"the grammar does not parse: {exc}") from exc


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _wait_for_reader(state: State, n_sent: int) -> None:
    """Stay at most STREAM_WINDOW tokens ahead of the parent, so a cancel lands within a few.

    A real model is far slower than the parent's reader and never waits here; a fast one (or a
    parent starved of CPU) would otherwise fill the pipe with tokens the user asked to stop.
    """
    while n_sent - state.consumed.value >= STREAM_WINDOW and not state.cancel.is_set():
        time.sleep(0.0005)


def _split_stop(pending: str, stops: list[str]) -> tuple[str, str, bool]:
    """Text safe to emit, text held back (a possible start of a stop string), stop found."""
    for stop in stops:
        i = pending.find(stop)
        if i >= 0:
            return pending[:i], "", True
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(pending)), 0, -1):
            if pending.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return pending[: len(pending) - hold], pending[len(pending) - hold :], False


def _crash(state: State, req: DebugCrashRequest) -> None:
    import ctypes

    lib_dir = os.path.join(os.path.dirname(state.llama_cpp.__file__), "lib")
    names = [n for n in os.listdir(lib_dir) if n.startswith(("libggml-base", "ggml-base"))]
    lib = ctypes.CDLL(os.path.join(lib_dir, names[0]))
    if req.how == "abort":
        lib.ggml_abort(b"quantdesk-debug", 1, b"deliberate abort requested by the parent")
    os.kill(os.getpid(), 9)


def _dispatch(state: State, rid: int, body: Any) -> Any:
    if isinstance(body, LoadRequest):
        return _load(state, body)
    if isinstance(body, GenerateRequest):
        return _generate(state, rid, body)
    if isinstance(body, UnloadRequest):
        return _unload(state)
    if isinstance(body, TokenizeRequest):
        if state.llm is None:
            raise RequestError("no model is loaded")
        return state.llm.tokenize(body.text.encode("utf-8"), add_bos=body.add_bos, special=True)
    if isinstance(body, DebugCrashRequest):
        return _crash(state, body)
    target = _EXTERNAL.get(type(body).__name__)
    if target is None:
        raise RequestError(f"unknown request {type(body).__name__}", "internal")
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)(state, body)


def main(conn: Any, cancel: Any, consumed: Any, log_path: str) -> None:
    """Entry point of the child process."""
    # ggml_abort would attach gdb to print a backtrace: seconds of delay and pages of noise in the
    # log, where the parent only needs the assertion line.
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")
    try:
        log = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        os.dup2(log.fileno(), 2)
        sys.stderr = log
    except OSError:
        pass
    state = State(conn, cancel, consumed)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        assert isinstance(msg, Request)
        try:
            result = _dispatch(state, msg.id, msg.body)
            conn.send(Done(msg.id, result))
        except RequestError as exc:
            conn.send(Failed(msg.id, exc.kind, str(exc)))
        except Exception as exc:  # a bug here must not kill the model the user is chatting with
            conn.send(Failed(msg.id, "internal", f"{type(exc).__name__}: {exc}"))
    _unload(state)

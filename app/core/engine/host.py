"""Child side of the engine: owns llama.cpp, answers requests from the parent pipe.

This is the only module (with the handlers it imports) that imports llama_cpp.  Its stderr goes to a
log file so that llama.cpp's last words (``GGML_ASSERT ...``) can be shown when it dies.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import importlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from app.core.engine.protocol import (
    DebugCrashRequest,
    Done,
    Failed,
    GenerateRequest,
    GenerationStats,
    LoadedInfo,
    LoadRequest,
    RenderRequest,
    Request,
    ScoreRequest,
    Token,
    TokenizeRequest,
    UnloadRequest,
)
from app.core.errors import ErrorKind, QuantDeskError

# Requests whose handlers live in their own modules: "module:function", called as f(state, body).
_EXTERNAL = {
    "ScoreRequest": "app.core.engine.host_score:handle",
    "DryRunRequest": "app.core.engine.host_dryrun:handle",
    "EmbedRequest": "app.core.engine.host_embed:handle",
}


class RequestError(QuantDeskError):
    """A request the child cannot serve; ``kind`` travels to the parent with the message."""

    default_kind = ErrorKind.REQUEST


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


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2``."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _glibc() -> Any:
    """The C library when it is glibc 2.33+ (``mallinfo2``, ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # musl, or an older glibc
        return None


def heap_in_use() -> int | None:
    """Bytes this process holds from malloc (small blocks and mmapped ones); None: unknown."""
    libc = _glibc()
    if libc is None:
        return None
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def trim_heap() -> None:
    """Give the heap's free pages back to the system (glibc keeps what a model load freed)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


STREAM_WINDOW = 4  # tokens sent but not yet read by the parent


class State:
    """What the child holds: the llama_cpp module, the loaded model, captured llama.cpp log."""

    def __init__(
        self,
        conn: Any,
        cancel: Any,
        consumed: Any,
        progress: Any = None,
        template_since: Any = None,
        template_timeout_s: float = 5.0,
    ) -> None:
        self.conn = conn
        self.cancel = cancel
        self.consumed = consumed  # shared counter: tokens the parent has read
        # Shared with the parent's watchdog (client.Engine._recv): a counter bumped whenever work
        # moves on, and the monotonic time a template render started (0: none running).
        self.progress = progress
        self.template_since = template_since
        self.template_timeout_s = template_timeout_s
        self.llm: Any = None
        self.load: LoadRequest | None = None
        self.formatter: Any = None
        self.chat_format = "completion"
        self.builtin_stops: list[str] = []
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

    def beat(self) -> None:
        """Tell the parent's watchdog that work moved on (a token, a batch, a heartbeat)."""
        if self.progress is not None:
            self.progress.value += 1


@contextlib.contextmanager
def _heartbeat(state: State, period_s: float = 0.5) -> Iterator[None]:
    """Beat from a thread while a request without its own progress points runs (load, dry run).

    Those requests never wait on the parent, so "alive" is as good as "moving" for them; generation
    and scoring beat per token and per batch instead, where a stall would be a real hang.
    """
    done = threading.Event()

    def run() -> None:
        while not done.wait(period_s):
            state.beat()

    t = threading.Thread(target=run, name="engine-heartbeat", daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join(2)


def _buffers(lines: list[str]) -> dict[str, int]:
    """``{"CPU_Mapped model": bytes, ...}`` from the log (the last value of each name wins)."""
    from app.core.llama_log import buffer_lines

    return {b.name: b.nbytes for b in buffer_lines(lines)}


def _load(state: State, req: LoadRequest) -> LoadedInfo:
    from app.core.engine.host_dryrun import context_fields, load_params, outputs_for
    from app.core.gguf_header import GGUFError, read_local

    try:
        spec = read_local(req.path)  # llama.cpp sees only a header that passed our checks
    except GGUFError as exc:
        raise RequestError(str(exc), "load") from exc
    template, n_ctx_train = spec.chat_template, spec.n_ctx_train
    m = req.memory
    # An unknown cache type is refused here, before the loaded model is let go.
    context = context_fields(state.llama_cpp, m, outputs_for(m.n_outputs_max, spec.metadata))
    # The parse holds every token and merge as Python objects (tens of MiB on a large
    # vocabulary): free them and hand the pages back before llama.cpp reads its own copy.
    del spec
    trim_heap()
    _unload(state)
    lc = state.llama_cpp
    from app.core.llama_log import flash_attn_in_force, memory_caches

    state.log_lines.clear()
    from app.core.hardware import suggested_threads

    # Unless chosen, as many threads as there are cores no other program holds right now
    # (sampled before the clock starts: it is not part of the load).
    threads = req.n_threads or suggested_threads()
    t0 = time.perf_counter()
    try:
        # The memory settings are the plan's (PlanOptions): the same ones the dry run used.
        if req.rpc_servers:
            from app.core.rpc import register_servers

            register_servers(req.rpc_servers)  # probes each first: ggml aborts on a dead one
        # The cache types, flash attention and swa_full are set by load_params, as the dry run
        # set them (Llama's own arguments for some of them are left at their defaults).
        with load_params(state, m, context):
            llm = lc.Llama(
                model_path=req.path,
                n_ctx=req.n_ctx,
                n_gpu_layers=req.n_gpu_layers,
                n_threads=threads,
                n_batch=req.n_batch,
                n_ubatch=m.n_ubatch,
                use_mmap=req.use_mmap,
                tensor_split=list(req.tensor_split) or None,
                verbose=True,
            )
    except QuantDeskError as exc:  # a worker that cannot be reached (app.core.rpc)
        if isinstance(exc, RequestError):
            raise
        raise RequestError(str(exc), "load") from exc
    except ValueError as exc:
        detail = _load_failure_lines(state.log_lines)
        hint = ": " + " | ".join(detail) if detail else ""
        raise RequestError(
            f"llama.cpp could not load {os.path.basename(req.path)}{hint}", "load"
        ) from exc
    # Warm up as llama.cpp's own tools do: the first decode sets up threads and graph buffers
    # (0.1-0.4 s even on a tiny model); it belongs to the load, not to the first reply's TTFT.
    bos = llm.token_bos()
    llm.eval([bos if bos >= 0 else 0])
    # The same decode doubles as a sanity check: weights full of NaN (a broken conversion or a
    # corrupted file) load fine and then chat garbage without a word.
    _check_logits(state, llm, req.path)
    llm.reset()
    # The loader's metadata (every token string, read once) is freed by now but glibc keeps the
    # pages: tens of MiB on a large vocabulary that the plan does not count and nothing reuses.
    trim_heap()
    load_s = time.perf_counter() - t0
    state.llm, state.load = llm, req
    try:
        _set_format(state, llm, req.chat_format, template)
    except RequestError:
        _unload(state)
        raise
    return LoadedInfo(
        path=req.path,
        n_ctx=llm.n_ctx(),
        n_ctx_train=n_ctx_train,
        n_gpu_layers=req.n_gpu_layers,
        load_s=load_s,
        chat_template=template,
        metadata={k: str(v)[:2000] for k, v in llm.metadata.items()},
        buffers=_buffers(state.log_lines),
        rss_bytes=current_rss(),
        caches=tuple(memory_caches(state.log_lines)),
        chat_format=state.chat_format,
        n_threads=threads,
        flash_attn=flash_attn_in_force(state.log_lines),
    )


_LOAD_KEYS = ("error", "failed", "invalid", "wrong", "missing", "unknown", "not supported")


def _load_failure_lines(lines: list[str], most: int = 4) -> list[str]:
    """The llama.cpp lines that say why a load failed: the specific cause, not only the last line.

    llama.cpp ends every failure with the same generic lines ("failed to load model"); the cause
    (a tensor of the wrong shape, an unknown architecture) comes before them, so the first matching
    lines are kept, then the last, up to ``most`` distinct ones.
    """
    found: list[str] = []
    for ln in lines:
        text = ln.strip()
        if "loader: - " in text:  # the metadata dump ("- kv 16: ...unknown_token_id"), not a cause
            continue
        if text and any(k in text.lower() for k in _LOAD_KEYS) and text not in found:
            found.append(text[:300])
    if len(found) > most:
        found = found[: most - 1] + found[-1:]
    return found


def _check_logits(state: State, llm: Any, path: str) -> None:
    import numpy as np

    lc = state.llama_cpp
    ptr = lc.llama_get_logits_ith(llm._ctx.ctx, -1)
    if not ptr:
        return
    logits = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))
    bad = int(np.count_nonzero(~np.isfinite(logits)))
    if bad:
        llm.close()
        raise RequestError(
            f"{os.path.basename(path)} loads, but its weights are broken: a test decode gave "
            f"{bad:,} of {logits.size:,} next-token scores as NaN or infinity. The file is "
            "corrupted or was converted wrongly; download it again or choose another file.",
            ErrorKind.CORRUPT,
        )


def _builtin_names(lc: Any) -> set[str]:
    import ctypes

    arr = (ctypes.c_char_p * 256)()
    n = lc.llama_chat_builtin_templates(arr, 256)
    return {(arr[i] or b"").decode() for i in range(max(0, min(n, 256)))}


def _set_format(state: State, llm: Any, forced: str | None, template: str | None) -> None:
    """Choose the prompt format (app.core.chat_format) and prepare what rendering it needs."""
    from app.core import chat_format as cf
    from app.core.engine.templates import TemplateRenderer

    lc = state.llama_cpp
    state.formatter, state.builtin_stops = None, []
    try:
        fmt = cf.choose_format(forced, bool(template), llm.metadata, _builtin_names(lc))
    except ValueError as exc:
        raise RequestError(str(exc), "request") from exc
    if fmt == cf.GGUF:
        assert template is not None
        eos = llm._model.token_get_text(llm.token_eos()) if llm.token_eos() >= 0 else ""
        bos = llm._model.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
        try:
            state.formatter = TemplateRenderer(template, bos_token=bos, eos_token=eos)
        except Exception as exc:  # a syntax error: the file's template cannot be used at all
            raise RequestError(
                f"the model's chat template does not compile: {type(exc).__name__}: {exc}; "
                "load it with another chat format (completion or builtin:NAME)",
                "template",
            ) from exc
    elif fmt.startswith(cf.BUILTIN_PREFIX):
        name = fmt[len(cf.BUILTIN_PREFIX) :]
        probe = [
            {"role": "user", "content": "\x01u1"},
            {"role": "assistant", "content": "\x01a1"},
            {"role": "user", "content": "\x01u2"},
        ]
        rendered = _apply_builtin(lc, name, probe, False)
        state.builtin_stops = cf.turn_stops(rendered, "\x01a1", "\x01u2")
    state.chat_format = fmt


def _apply_builtin(lc: Any, name: str, messages: list[dict[str, str]], add_ass: bool) -> str:
    """Render with llama.cpp's own built-in template ``name`` (llama_chat_apply_template)."""
    import ctypes

    from app.core.engine.templates import MAX_TEXT

    arr = (lc.llama_chat_message * max(1, len(messages)))()
    keep = []  # the byte strings must outlive the call
    for i, m in enumerate(messages):
        role, content = m["role"].encode(), m["content"].encode("utf-8")
        keep += [role, content]
        arr[i].role, arr[i].content = role, content
    size = 4096 + sum(len(b) for b in keep) * 2
    for _ in range(2):
        buf = ctypes.create_string_buffer(size)
        n = lc.llama_chat_apply_template(name.encode(), arr, len(messages), add_ass, buf, size)
        if n < 0:
            raise RequestError(f"llama.cpp's built-in template {name!r} failed", "template")
        if n > MAX_TEXT * 4:
            raise RequestError(f"the prompt is {n:,} bytes (the limit is {MAX_TEXT * 4:,})")
        if n <= size:
            return buf.raw[:n].decode("utf-8", errors="replace")
        size = n + 1
    raise RequestError(f"llama.cpp's built-in template {name!r} did not fit its buffer", "template")


def _unload(state: State) -> None:
    if state.llm is not None:
        state.llm.close()
    state.llm = state.formatter = state.load = None
    state.chat_format, state.builtin_stops = "completion", []


def _prompt(state: State, req: GenerateRequest) -> tuple[str, list[str], bool]:
    """The prompt text, extra stop strings, and whether the template already added BOS."""
    from app.core import chat_format as cf
    from app.core.engine.templates import TemplateLimit

    if req.messages is None:
        return req.prompt or "", [], False
    if state.chat_format == cf.COMPLETION or state.llm is None:
        # A base model: its text continues the prompt; role labels would only be imitated.
        return cf.completion_prompt(req.messages), [], False
    if state.chat_format.startswith(cf.BUILTIN_PREFIX):
        name = state.chat_format[len(cf.BUILTIN_PREFIX) :]
        return _apply_builtin(state.llama_cpp, name, req.messages, True), state.builtin_stops, False
    if state.template_since is not None:
        state.template_since.value = time.monotonic()
    try:
        result = state.formatter(req.messages, timeout_s=state.template_timeout_s)
    except TemplateLimit as exc:
        raise RequestError(str(exc), "template") from exc
    except Exception as exc:  # jinja2's SecurityError, TemplateError, ...
        raise RequestError(
            f"the model's chat template failed or was refused by the sandbox: {type(exc).__name__}: {exc}",
            "template",
        ) from exc
    finally:
        if state.template_since is not None:
            state.template_since.value = 0.0
    return result.prompt, [s for s in result.stop if s], True


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
    cached = _window_reuse(
        state, llm, _common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
    )
    evaluated = max(len(tokens) - cached, 1)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text, pending = "", ""
    n_gen, reason = 0, "length"
    from app.core.chat_format import ReasoningSplitter, prompt_opens_reasoning

    thinking = ReasoningSplitter(prompt_opens_reasoning(prompt))
    n_reasoning = 0
    t0 = time.perf_counter()
    t_first = t_last = t0
    vocab = llm._model.vocab
    lc = state.llama_cpp
    if not _prefill(state, llm, tokens, cached):
        reason = "cancelled"
    for tok in (
        ()
        if reason == "cancelled"
        else llm.generate(
            tokens,
            temp=s.temperature,
            top_k=s.top_k,
            top_p=s.top_p,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            reset=True,
            grammar=_grammar(state, req.grammar),
            logits_processor=_bias(req.logit_bias, llm.n_vocab()),
        )
    ):
        now = time.perf_counter()
        state.beat()
        if n_gen == 0:
            t_first = now
        t_last = now
        if not req.ignore_eos and lc.llama_vocab_is_eog(vocab, tok):
            reason = "eos"
            break
        n_gen += 1
        pending += decoder.decode(llm.detokenize([tok], special=False))
        emit, pending, hit = _split_stop(pending, stops)
        was_thinking = thinking.in_reasoning
        if emit:
            text += emit
            thinking.feed(emit)
        n_reasoning += was_thinking or thinking.in_reasoning
        if req.stream:
            # Every token is reported, with or without text (byte pieces of one character,
            # control tokens, a held-back stop prefix): the parent's count is what the flow
            # window below waits on, and a token it never hears about would stall both sides.
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
            state.conn.send(Token(rid, tail, n_gen))
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
        reasoning_tokens=n_reasoning if thinking.seen_reasoning else 0,
        chat_format=state.chat_format if req.messages is not None else "prompt",
    )


def _window_reuse(state: State, llm: Any, cached: int) -> int:
    """How much of the shared prefix can really be reused: all of it, unless the cache keeps
    only the window of its sliding-window layers (``swa_full`` off) and has already dropped
    positions the next token's window needs -- a chat rewound to an earlier turn.  Then the
    cache is cleared and the whole prompt evaluated, as llama-server does: llama-cpp-python
    would reuse it as it is and answer from a broken window.
    """
    load = state.load
    if cached == 0 or load is None or load.memory.swa_full:
        return cached
    lc = state.llama_cpp
    n_swa = int(lc.llama_model_n_swa(llm._model.model))
    if n_swa <= 0:
        return cached
    memory = lc.llama_get_memory(llm._ctx.ctx)
    oldest = int(lc.llama_memory_seq_pos_min(memory, 0))
    keep = min(cached, llm.n_tokens)
    if 0 <= oldest <= max(0, keep - n_swa):
        return cached  # the window before the kept prefix is all there
    lc.llama_memory_clear(memory, True)
    llm.n_tokens = 0
    return 0


def _prefill(state: State, llm: Any, tokens: list[int], cached: int) -> bool:
    """Evaluate the uncached prompt (all but its last token) batch by batch; False if cancelled.

    llama-cpp-python would evaluate it in one call inside ``generate``; doing it here lets each
    batch report progress to the parent's watchdog (a long prompt on a slow machine is not a hang)
    and lets a cancel land between batches.  ``generate`` then finds all but the last token cached.
    """
    keep = min(cached, len(tokens) - 1)
    if llm.n_tokens > keep:
        if not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            return True  # this cache cannot be cut (recurrent models): let generate() redo it
        llm.n_tokens = keep
    step = max(1, int(llm.n_batch))
    for i in range(keep, len(tokens) - 1, step):
        if state.cancel.is_set():
            return False
        llm.eval(tokens[i : min(i + step, len(tokens) - 1)])
        state.beat()
    return True


def _bias(bias: dict[int, float] | None, n_vocab: int) -> Any:
    """A logits processor adding ``bias`` (token id -> value), or None."""
    if not bias:
        return None
    import numpy as np

    bad = [t for t in bias if not 0 <= int(t) < n_vocab]
    if bad:
        raise RequestError(
            f"logit_bias names tokens outside the vocabulary (0..{n_vocab - 1}): {bad[:5]}"
        )
    ids = np.asarray([int(t) for t in bias], dtype=np.intp)
    vals = np.asarray(list(bias.values()), dtype=np.float32)

    def apply(_input_ids: Any, logits: Any) -> Any:
        # llama.cpp hands the custom sampler the whole vocabulary in id order (it runs first)
        logits[ids] += vals
        return logits

    return [apply]


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

    lib_dir = os.path.join(os.path.dirname(str(state.llama_cpp.__file__)), "lib")
    names = [n for n in os.listdir(lib_dir) if n.startswith(("libggml-base", "ggml-base"))]
    lib = ctypes.CDLL(os.path.join(lib_dir, names[0]))
    if req.how == "abort":
        lib.ggml_abort(b"quantdesk-debug", 1, b"deliberate abort requested by the parent")
    if req.how == "hang":  # alive, silent, no progress: what a deadlock looks like from outside
        time.sleep(3600)
        return
    if req.how == "alloc":  # grow like a runaway template or cache would, until stopped
        hoard = []
        for _ in range(400):  # at most 20 GB, should nothing stop it
            hoard.append(bytearray(os.urandom(1) * (50 << 20)))
            time.sleep(0.02)
        return
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
    if isinstance(body, RenderRequest):
        return _prompt(state, GenerateRequest(messages=body.messages))[0]
    target = _EXTERNAL.get(type(body).__name__)
    if target is None:
        raise RequestError(f"unknown request {type(body).__name__}", "internal")
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)(state, body)


def main(
    conn: Any,
    cancel: Any,
    consumed: Any,
    log_path: str,
    progress: Any = None,
    template_since: Any = None,
    template_timeout_s: float = 5.0,
) -> None:
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
    state = State(conn, cancel, consumed, progress, template_since, template_timeout_s)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        assert isinstance(msg, Request)
        try:
            if isinstance(msg.body, (GenerateRequest, ScoreRequest, DebugCrashRequest)):
                result = _dispatch(state, msg.id, msg.body)  # they beat per token / batch
            else:
                with _heartbeat(state):
                    result = _dispatch(state, msg.id, msg.body)
            conn.send(Done(msg.id, result))
        except RequestError as exc:
            conn.send(Failed(msg.id, exc.kind, str(exc)))
        except Exception as exc:  # a bug here must not kill the model the user is chatting with
            conn.send(Failed(msg.id, "internal", f"{type(exc).__name__}: {exc}"))
    _unload(state)

"""Parent side of the engine: start the child, send requests, stream replies, notice its death.

:class:`Engine` is owned by one caller thread at a time (a worker thread in the GUI, the main thread
in the CLI); :meth:`Engine.cancel` and :meth:`Engine.close` may be called from any thread.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.core import paths
from app.core.engine.protocol import (
    DebugCrashRequest,
    Done,
    Failed,
    GenerateRequest,
    GenerationStats,
    LoadedInfo,
    LoadRequest,
    Request,
    Sampling,
    Token,
    UnloadRequest,
)
from app.core.errors import ErrorKind, QuantDeskError

_ids = itertools.count(1)


class EngineError(QuantDeskError):
    """A request failed; ``kind`` says where (load, template, request, crashed, internal)."""

    default_kind = ErrorKind.REQUEST


class EngineCrashed(EngineError):
    """The engine process died; ``exitcode`` is its exit status (negative: killed by a signal)."""

    def __init__(
        self, message: str, exitcode: int | None, kind: ErrorKind | str = ErrorKind.CRASHED
    ) -> None:
        super().__init__(message, kind=kind)
        self.exitcode = exitcode


STALL_TIMEOUT_S = 120.0  # no token, batch or heartbeat for this long: the child is stuck
MEMORY_SHARE = 0.9  # default memory limit: this share of the machine's RAM


def anon_rss(pid: int) -> int:
    """Memory the process owns (not the model file's page cache, which the OS can drop), bytes."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def describe_exit(code: int | None) -> str:
    """Exit status in words: which signal, and what it usually means for llama.cpp."""
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        meaning = {
            "SIGKILL": "killed -- often the system running out of memory",
            "SIGABRT": "aborted inside llama.cpp (a failed assertion)",
            "SIGSEGV": "crashed with a memory access violation",
            "SIGBUS": "crashed reading the model file (was it changed or removed?)",
            "SIGTERM": "terminated",
        }.get(name, "killed by a signal")
        return f"{meaning} ({name}, exit code {code})"
    if os.name == "nt" and code == 3:
        return f"aborted inside llama.cpp (exit code {code})"
    if code & 0xFFFFFFFF == 0xC0000005:
        return f"crashed with a memory access violation (exit code {code:#x})"
    return f"exited unexpectedly (exit code {code})"


class Engine:
    """One engine child process: load a model, generate (streamed), cancel, unload, stats."""

    def __init__(
        self,
        log_dir: Path | None = None,
        *,
        stall_timeout_s: float | None = STALL_TIMEOUT_S,
        memory_limit_bytes: int | None = None,
        template_timeout_s: float = 5.0,
    ) -> None:
        """``memory_limit_bytes`` None: 90 % of RAM; ``stall_timeout_s`` None: wait forever."""
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None
        self._cancel = self._ctx.Event()
        self._consumed = self._ctx.RawValue("q", 0)  # stream flow control, see host.STREAM_WINDOW
        self._progress = self._ctx.RawValue("q", 0)  # bumped by the child as work moves on
        self._template_since = self._ctx.RawValue("d", 0.0)  # monotonic start of a render, or 0
        self.stall_timeout_s = stall_timeout_s
        if memory_limit_bytes is None:
            import psutil

            memory_limit_bytes = int(psutil.virtual_memory().total * MEMORY_SHARE)
        self.memory_limit_bytes = memory_limit_bytes
        self.template_timeout_s = template_timeout_s
        self.tokens_received = 0  # tokens of the running generation the parent has read
        self._send_lock = threading.Lock()
        self._log_dir = log_dir
        self.log_path: Path | None = None
        self.loaded: LoadedInfo | None = None
        self._workers: tuple[str, ...] = ()  # RPC workers registered in the current child

    # ---- life cycle ---------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start a fresh child (a dead one is replaced)."""
        if self.alive:
            return
        self._reap()
        from app.core.engine import host

        folder = self._log_dir or paths.log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / f"engine-{os.getpid()}-{next(_ids)}.log"
        parent, child = self._ctx.Pipe(duplex=True)
        self._cancel.clear()
        self._template_since.value = 0.0
        self._proc = self._ctx.Process(
            target=host.main,
            args=(
                child,
                self._cancel,
                self._consumed,
                str(self.log_path),
                self._progress,
                self._template_since,
                self.template_timeout_s,
            ),
            name="quantdesk-engine",
            daemon=True,
        )
        self._proc.start()
        child.close()
        self._conn = parent

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child: ask politely, then terminate, then kill.  Safe to call twice."""
        self._cancel.set()
        proc, conn = self._proc, self._conn
        if proc is None:
            return
        try:
            if proc.is_alive() and conn is not None:
                with self._send_lock:
                    conn.send(None)
        except (OSError, ValueError):
            pass
        proc.join(timeout)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout)
        self._reap()

    def _reap(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None and not self._proc.is_alive():
            self._proc.close()
        self._proc = self._conn = None
        self.loaded = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests -----------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the running generation after at most one more token (any thread)."""
        self._cancel.set()

    def _send(self, body: Any) -> int:
        if not self.alive:
            self.start()
        rid = next(_ids)
        with self._send_lock:
            self._conn.send(Request(rid, body))
        return rid

    def _recv(self, timeout: float | None) -> Any:
        """The next message from the child, watching it meanwhile.

        Nothing waits unbounded: besides ``timeout`` (the whole wait) the child must show progress
        (a message, or its progress counter moving) within ``stall_timeout_s``; a template render
        must end within the template limit (the child stops its own render; this is the backstop
        where it cannot); and its own memory must stay under ``memory_limit_bytes``.  Each limit
        stops the child and says which one it hit.
        """
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        seen, moved = self._progress.value, now
        checked = 0.0
        while True:
            ready = mpc.wait([self._conn, self._proc.sentinel], timeout=0.25)
            if self._conn in ready:
                try:
                    return self._conn.recv()
                except (EOFError, OSError):
                    self._raise_dead()
            elif ready:  # the process ended and nothing is left to read
                self._raise_dead()
            now = time.monotonic()
            if now - checked >= 0.2:
                checked = now
                self._check_limits(now)
            if self._progress.value != seen:
                seen, moved = self._progress.value, now
            elif self.stall_timeout_s is not None and now - moved > self.stall_timeout_s:
                self._stop(
                    f"the engine made no progress for {self.stall_timeout_s:g} s and was stopped "
                    "(it stopped answering; the model is unloaded)",
                    ErrorKind.TIMEOUT,
                )
            if deadline is not None and now > deadline:
                self._stop("the engine did not answer in time and was stopped", ErrorKind.TIMEOUT)

    def _check_limits(self, now: float) -> None:
        since = self._template_since.value
        if since and now - since > self.template_timeout_s + 2.0:
            self._stop(
                f"the chat template took longer than {self.template_timeout_s:g} s to render; "
                "the engine was stopped (the model is unloaded)",
                ErrorKind.TEMPLATE,
            )
        if self.memory_limit_bytes and self._proc is not None:
            used = anon_rss(self._proc.pid)
            if used > self.memory_limit_bytes:
                from app.core.units import human_bytes

                self._stop(
                    f"the engine exceeded its memory limit ({human_bytes(used)} used, "
                    f"{human_bytes(self.memory_limit_bytes)} allowed) and was stopped; "
                    "the model is unloaded",
                    ErrorKind.LIMIT,
                )

    def _stop(self, message: str, kind: ErrorKind) -> None:
        """Kill the child for breaking a limit and raise the reason (not a guess from the signal)."""
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(5)
        code = proc.exitcode if proc is not None else None
        self._reap()
        raise EngineCrashed(message, code, kind)

    def _raise_dead(self) -> None:
        proc = self._proc
        proc.join(5)
        code = proc.exitcode
        detail = self._log_tail()
        self._reap()
        msg = f"The engine process died: {describe_exit(code)}."
        if detail:
            msg += f" Last words: {detail}"
        if self._workers:  # ggml-rpc aborts without naming the worker it lost
            from app.core.rpc import explain_lost_workers

            msg = explain_lost_workers(self._workers, msg)
        raise EngineCrashed(msg, code)

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()[-40:]
        keys = ("GGML_ASSERT", "error", "failed", "abort", "out of memory")
        found = [ln.strip() for ln in lines if any(k in ln.lower() or k in ln for k in keys)]
        return " | ".join(found[-3:])[:600]

    def request(self, body: Any, timeout: float | None = None) -> Any:
        """Send one request and wait for its result (raises EngineError / EngineCrashed)."""
        rid = self._send(body)
        while True:
            msg = self._recv(timeout)
            if isinstance(msg, Done) and msg.id == rid:
                return msg.result
            if isinstance(msg, Failed) and msg.id == rid:
                raise EngineError(msg.message, msg.kind)

    def load(self, path: str | Path, **options: Any) -> LoadedInfo:
        """Load a model (options as in LoadRequest).  A previous model is unloaded first."""
        workers = tuple(options.get("rpc_servers", ()))
        if self.alive and self._workers and workers != self._workers:
            self.close()  # ggml cannot unregister a worker's devices: a fresh child forgets them
        if not self.alive:
            self._workers = ()
        self._workers = tuple(dict.fromkeys(self._workers + workers))
        self.loaded = self.request(LoadRequest(path=str(path), **options))
        return self.loaded

    def unload(self) -> None:
        if self.alive:
            self.request(UnloadRequest())
        self.loaded = None

    def generate(self, request: GenerateRequest) -> Iterator[str | GenerationStats]:
        """Yield text pieces as they are sampled, then the :class:`GenerationStats`."""
        self._cancel.clear()
        self._consumed.value = 0
        self.tokens_received = 0
        rid = self._send(request)
        finished = False
        try:
            while True:
                msg = self._recv(None)
                if isinstance(msg, Token) and msg.id == rid:
                    # The child reports every sampled token, text or not: counting them all is
                    # what keeps its flow window moving (host.STREAM_WINDOW).
                    self.tokens_received = max(self.tokens_received, msg.token)
                    self._consumed.value = self.tokens_received
                    if msg.text:
                        yield msg.text
                elif isinstance(msg, Done) and msg.id == rid:
                    finished = True
                    yield msg.result
                    return
                elif isinstance(msg, Failed) and msg.id == rid:
                    finished = True
                    raise EngineError(msg.message, msg.kind)
        finally:
            if not finished and self.alive:
                # The consumer stopped early (Ctrl+C, closed generator): stop the child and wait
                # for its answer so the next request does not read this one's leftovers.
                self._cancel.set()
                self._drain(rid)

    def _drain(self, rid: int) -> None:
        try:
            while True:
                msg = self._recv(30)
                if isinstance(msg, (Done, Failed)) and msg.id == rid:
                    return
        except EngineError:
            pass

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 512,
        sampling: Sampling | None = None,
        stream: bool = True,
        ignore_eos: bool = False,
    ) -> Iterator[str | GenerationStats]:
        req = GenerateRequest(
            messages=messages,
            max_tokens=max_tokens,
            sampling=sampling or Sampling(),
            stream=stream,
            ignore_eos=ignore_eos,
        )
        return self.generate(req)

    def complete(self, request: GenerateRequest) -> GenerationStats:
        """Run a generation to its end and return only the stats (text included)."""
        stats = None
        for item in self.generate(request):
            if isinstance(item, GenerationStats):
                stats = item
        assert stats is not None
        return stats

    def debug_crash(self, how: str = "abort") -> None:
        """Make the child die inside llama.cpp; raises EngineCrashed (tests, --self-test)."""
        self.request(DebugCrashRequest(how))

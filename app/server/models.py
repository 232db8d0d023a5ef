"""The model pool: which library models are loaded, planned by the core planner, LRU and idle TTL.

One engine process per loaded model.  A model loads on first use with the plan's context and GPU
layers; the plan is made against what this machine's budget leaves once the loaded models' planned
memory is taken off, so several models stay loaded only while the planner says they fit together.
When the new one does not fit as well as it would alone, the least recently used *idle* model is
unloaded and the plan made again; when no model can be unloaded (all are busy) a plan that still
fits is used as is (its reason says what was shortened), and otherwise the request gets a 503 with
the plan's reason.  Requests to one model queue on its lock (bounded by ``queue_timeout_s``); a
model idle for ``idle_ttl_s`` is unloaded by a reaper thread.

The budget is detected once (the planner's cached profile), before the server loads anything, so
subtracting the loaded models' plans does not count their memory twice.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.core.cancel import CancelToken
from app.core.engine import Engine, GenerationStats, LoadedInfo
from app.core.engine.protocol import EmbedRequest, GenerateRequest, TokenizeRequest
from app.core.errors import ErrorKind
from app.core.fit import Budget
from app.core.library import Library, LibraryModel
from app.core.planning import MIN_CTX, LoadPlan, PlanError, Planner
from app.server.config import ServerOptions
from app.server.errors import ApiError

LOG_SIZE = 500  # request records kept for the page and /health


@dataclass
class RequestRecord:
    """One answered request, for the live log: what, which model, how fast, how it ended."""

    at: float  # time.time() when it started
    endpoint: str
    model: str
    status: int
    prompt_tokens: int = 0
    tokens: int = 0
    ttft_s: float = 0.0
    gen_tok_s: float = 0.0
    total_s: float = 0.0
    finish: str = ""  # "stop", "length", "cancelled", "disconnected", or the error's message
    stream: bool = False
    sent: int = 0  # text pieces handed to the socket (a stream)


@dataclass
class PoolEvent:
    """A model loaded or unloaded (``why``: first use, evicted for X, idle, shutdown)."""

    at: float
    kind: str  # "loaded" | "unloaded"
    model: str
    why: str


@dataclass
class Slot:
    """A loaded model: its engine, its plan, and the queue (a lock) of the requests using it."""

    model: LibraryModel
    engine: Engine
    plan: LoadPlan
    info: LoadedInfo
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0  # requests holding or waiting for the lock (guarded by the pool's lock)
    last_used: float = field(default_factory=time.monotonic)
    current: CancelToken | None = None  # the generation running now

    @property
    def n_ctx(self) -> int:
        return self.info.n_ctx


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model as the page and /health show it."""

    name: str
    n_ctx: int
    n_gpu_layers: int
    ram_bytes: int
    vram_bytes: int
    busy: bool
    idle_s: float
    reason: str


class ModelPool:
    """The server's models (see the module docstring); thread-safe; ``close()`` when done."""

    def __init__(
        self,
        planner: Planner,
        library: Library,
        options: ServerOptions,
        *,
        log_dir: Path | None = None,
    ) -> None:
        self.planner = planner
        self.library = library
        self.options = options
        self.log_dir = log_dir
        self.log: deque[RequestRecord] = deque(maxlen=LOG_SIZE)
        self.events: deque[PoolEvent] = deque(maxlen=LOG_SIZE)
        self.listeners: list[Callable[[RequestRecord | PoolEvent], None]] = []
        self._lock = threading.Lock()  # guards _slots and every slot's users/current
        self._load_lock = threading.Lock()  # one plan-and-load decision at a time
        self._slots: dict[int, Slot] = {}
        self._stop = threading.Event()
        self._closed = False
        self._reaper: threading.Thread | None = None
        if options.idle_ttl_s > 0:
            self._reaper = threading.Thread(
                target=self._reap_idle, name="quantdesk-server-ttl", daemon=True
            )
            self._reaper.start()

    # ---- the library ----------------------------------------------------------------------
    def models(self) -> list[LibraryModel]:
        """The models this server offers: the library's present ones (``options.models`` only)."""
        present = [m for m in self.library.list() if m.present]
        if not self.options.models:
            return present
        return [m for m in present if any(_matches(m, key) for key in self.options.models)]

    def resolve(self, name: str) -> LibraryModel:
        """A request's ``model``: the library id, the file name (with or without ``.gguf``), the
        path, or a Hub repo holding one model.  Unknown: a 404."""
        if not isinstance(name, str) or not name:
            raise ApiError("'model' is required", 400, param="model", code="missing_model")
        offered = self.models()
        found = [m for m in offered if _matches(m, name)]
        if not found:
            repo = [m for m in offered if m.repo_id == name]
            found = repo if len(repo) == 1 else []
        if not found:
            names = ", ".join(m.name for m in offered) or "none (the library is empty)"
            raise ApiError(
                f"The model '{name}' does not exist here. Models: {names}",
                404,
                param="model",
                code="model_not_found",
                kind=ErrorKind.NOT_FOUND,
            )
        return found[0]

    # ---- what is loaded -------------------------------------------------------------------
    def loaded(self) -> list[LoadedModel]:
        now = time.monotonic()
        with self._lock:
            return [
                LoadedModel(
                    s.model.name,
                    s.n_ctx,
                    s.plan.n_gpu_layers,
                    s.plan.ram_bytes,
                    s.plan.vram_bytes,
                    s.users > 0,
                    now - s.last_used,
                    s.plan.reason,
                )
                for s in self._slots.values()
            ]

    @property
    def closed(self) -> bool:
        return self._closed

    def engine_pids(self) -> list[int]:
        with self._lock:
            return [pid for s in self._slots.values() if (pid := s.engine.pid) is not None]

    @contextlib.contextmanager
    def use(self, model: LibraryModel, cancel: CancelToken) -> Iterator[Slot]:
        """Hold ``model``'s engine (loading it first when needed) until the block ends.

        Waits in the model's queue at most ``queue_timeout_s`` (then a 503), and gives up at once
        when ``cancel`` is set (the client went away while waiting).
        """
        if self._closed:
            raise ApiError("the server is shutting down", 503)
        slot = self._take(model)
        try:
            deadline = time.monotonic() + self.options.queue_timeout_s
            while not slot.lock.acquire(timeout=0.05):
                if cancel.is_set():
                    raise ApiError("cancelled while waiting", 499, kind=ErrorKind.CANCELLED)
                if time.monotonic() > deadline:
                    raise ApiError(
                        f"{model.name} is busy: waited {self.options.queue_timeout_s:.0f} s for "
                        "the requests ahead of this one",
                        503,
                        code="model_busy",
                        kind=ErrorKind.TIMEOUT,
                    )
            try:
                if self._closed:  # stopped while this request waited: never start an engine now
                    raise ApiError("the server is shutting down", 503)
                if not slot.engine.alive:  # the engine died under a previous request: reload
                    slot.info = slot.engine.load(
                        slot.model.path, **_load_args(slot.plan, self.options)
                    )
                yield slot
            finally:
                with self._lock:
                    slot.current = None
                slot.lock.release()
        finally:
            with self._lock:
                slot.users -= 1
                slot.last_used = time.monotonic()

    def cancel(self, token: CancelToken) -> None:
        """Stop the generation ``token`` belongs to (any thread; a queued one never starts)."""
        token.cancel()
        with self._lock:
            running = [s for s in self._slots.values() if s.current is token]
        for slot in running:
            slot.engine.cancel()

    def _take(self, model: LibraryModel) -> Slot:
        with self._lock:
            slot = self._slots.get(model.id)
            if slot is not None:
                slot.users += 1
                return slot
        return self._load(model)

    def _load(self, model: LibraryModel) -> Slot:
        with self._load_lock:
            with self._lock:  # loaded by another request while this one waited for the lock
                slot = self._slots.get(model.id)
                if slot is not None:
                    slot.users += 1
                    return slot
            if self._closed:
                raise ApiError("the server is shutting down", 503)
            plan = self._plan(model)
            engine = Engine(log_dir=self.log_dir)
            try:
                info = engine.load(model.path, **_load_args(plan, self.options))
            except BaseException:
                engine.close()
                raise
            slot = Slot(model, engine, plan, info, users=1)
            with self._lock:
                if self._closed:  # stopped during the load: close() has already run
                    engine.close()
                    raise ApiError("the server is shutting down", 503)
                self._slots[model.id] = slot
            self._event("loaded", model.name, plan.reason)
            return slot

    def _plan(self, model: LibraryModel) -> LoadPlan:
        """The plan to load ``model`` with, unloading LRU idle models while that helps."""
        o = self.options
        full = self.planner.budget(o.ram_budget_bytes, o.vram_budget_bytes)
        alone = self._plan_for(model, full)  # PlanError: a 503
        while True:
            with self._lock:
                held = list(self._slots.values())
            ram = sum(s.plan.ram_bytes for s in held)
            vram = sum(s.plan.vram_bytes for s in held)
            left = replace(
                full,
                ram_bytes=max(0, full.ram_bytes - ram),
                vram_bytes=max(0, full.vram_bytes - vram) if full.vram_bytes else 0,
            )
            plan: LoadPlan | None
            try:
                plan = alone if not held else self._plan_for(model, left)
                error: PlanError | None = None
            except PlanError as exc:
                plan, error = None, exc
            if plan is not None and (plan.n_ctx, plan.n_gpu_layers) >= (
                alone.n_ctx,
                alone.n_gpu_layers,
            ):
                return plan
            victim = self._pop_lru_idle()
            if victim is None:
                if plan is not None:
                    return plan  # all others busy: what still fits, the reason says how
                names = ", ".join(s.model.name for s in held)
                raise PlanError(
                    f"{model.name} does not fit next to the loaded models ({names}), and none of "
                    f"them can be unloaded now (all are answering requests): {error}"
                )
            victim.engine.close()
            self._event(
                "unloaded", victim.model.name, f"evicted (least recently used) for {model.name}"
            )

    def _plan_for(self, model: LibraryModel, budget: Budget) -> LoadPlan:
        """Here alone when the model fits at its context; split over the workers only when it
        must and no loaded model holds them (a worker serves one engine at a time)."""
        o = self.options
        try:
            local: LoadPlan | None = self.planner.plan_load(model.path, o.n_ctx, budget=budget)
        except PlanError:
            if not o.workers:
                raise
            local = None
        if not o.workers:
            assert local is not None
            return local
        spec = self.planner.spec(model.path)
        want = max(MIN_CTX, min(o.n_ctx, int(spec.n_ctx_train or o.n_ctx)))
        with self._lock:
            workers_taken = any(s.plan.rpc_servers for s in self._slots.values())
        if local is not None and (local.n_ctx >= want or workers_taken):
            return local
        if workers_taken:
            raise PlanError(
                f"{model.name} needs the workers, and a loaded model is using them (a worker "
                "serves one model at a time)"
            )
        try:
            return self.planner.plan_load(model.path, o.n_ctx, budget=budget, workers=o.workers)
        except PlanError:
            if local is not None:
                return local  # the workers cannot help: the shortened context here stands
            raise

    def _pop_lru_idle(self) -> Slot | None:
        with self._lock:
            idle = [s for s in self._slots.values() if s.users == 0]
            if not idle:
                return None
            victim = min(idle, key=lambda s: s.last_used)
            del self._slots[victim.model.id]
            return victim

    def _reap_idle(self) -> None:
        ttl = self.options.idle_ttl_s
        step = min(5.0, max(0.2, ttl / 4))
        while not self._stop.wait(step):
            now = time.monotonic()
            with self._lock:
                old = [s for s in self._slots.values() if s.users == 0 and now - s.last_used > ttl]
                for s in old:
                    del self._slots[s.model.id]
            for s in old:
                s.engine.close()
                self._event("unloaded", s.model.name, f"idle for {ttl:.0f} s")

    # ---- generation -----------------------------------------------------------------------
    def tokenize(self, slot: Slot, text: str) -> list[int]:
        """``text``'s tokens by the loaded model (call while holding ``slot``)."""
        return list(slot.engine.request(TokenizeRequest(text, add_bos=True), timeout=60))

    def generate(
        self,
        slot: Slot,
        request: GenerateRequest,
        cancel: CancelToken,
    ) -> Iterator[str | GenerationStats]:
        """The engine's stream for ``request`` (call while holding ``slot``); stops on ``cancel``."""
        with self._lock:
            slot.current = cancel
        if cancel.is_set():
            return
        stream = slot.engine.generate(request)
        stopping = False
        try:
            for item in stream:
                yield item
                # Engine.generate clears the engine's cancel flag when it starts: a cancel that
                # raced with the start is caught here.  The stream is read to its end (at most a
                # token more) so that its stats count what the engine really generated.
                if cancel.is_set() and not stopping:
                    stopping = True
                    slot.engine.cancel()
        finally:
            close = getattr(stream, "close", None)  # a generator: closing it drains the engine
            if close is not None:
                close()

    def embed(self, model: LibraryModel, texts: list[str]) -> dict[str, Any]:
        """Embeddings of ``texts`` by ``model`` (queued like a generation)."""
        with self.use(model, CancelToken()) as slot:
            result: dict[str, Any] = slot.engine.request(EmbedRequest(list(texts)), timeout=600)
            return result

    # ---- log ------------------------------------------------------------------------------
    def record(self, rec: RequestRecord) -> None:
        self.log.append(rec)
        self._notify(rec)

    def _event(self, kind: str, model: str, why: str) -> None:
        ev = PoolEvent(time.time(), kind, model, why)
        self.events.append(ev)
        self._notify(ev)

    def _notify(self, item: RequestRecord | PoolEvent) -> None:
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):  # a broken listener must not fail a request
                listener(item)

    # ---- life cycle -----------------------------------------------------------------------
    def stop_accepting(self) -> None:
        """Refuse new work and stop the running generations (their streams end normally)."""
        with self._lock:
            self._closed = True
            running = [s.current for s in self._slots.values() if s.current is not None]
        for token in running:
            self.cancel(token)

    def close(self) -> None:
        """Stop the TTL reaper and every engine process (idempotent)."""
        with self._lock:
            self._closed = True
            slots = list(self._slots.values())
            self._slots.clear()
            running = [s.current for s in slots if s.current is not None]
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=10)
        for token in running:  # a worker waiting for its response to read on must end too
            token.cancel()
        for s in slots:
            s.engine.cancel()
            s.engine.close()
            self._event("unloaded", s.model.name, "server stopped")


def _matches(model: LibraryModel, key: str) -> bool:
    return key in (str(model.id), model.name, Path(model.name).stem, str(model.path))


def _load_args(plan: LoadPlan, options: ServerOptions) -> dict[str, Any]:
    return {"n_threads": options.n_threads, **plan.load_kwargs()}

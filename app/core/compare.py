"""Side-by-side runs of quant variants of one model, with measured quality loss.

:func:`run_compare` is a generator (DESIGN.md 2): it yields events while it works -- the run plan,
loads, streamed text pieces, finished replies, progress -- and ends with :class:`Finished` holding
the :class:`CompareReport`.  It checks a cancel token (anything with ``is_set()``) at each step.

Each variant runs in its own engine process.  Variants run at the same time when the fit plan says
they fit in memory together, one after another otherwise (the core planner says which and why).
Quality (app.core.quality): the reference's reply is teacher-forced through every variant in its
engine child and the next-token distributions are compared; the same over the reference text in
``resources/eval``.  In sequential mode the reference runs first and its compressed distributions
are kept for the variants that follow, so every variant is loaded exactly once.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from app.core import paths
from app.core.cancel import CancelToken
from app.core.compare_report import CompareReport, VariantResult
from app.core.engine.client import Engine
from app.core.engine.protocol import (
    GenerateRequest,
    GenerationStats,
    Sampling,
    ScoreRequest,
    TokenizeRequest,
)
from app.core.errors import ErrorKind, QuantDeskError
from app.core.gguf_header import GGUFError, ModelSpec, read_local
from app.core.planning import Planner, RunPlan
from app.core.quality import DEFAULT_TOP_K, Drift, ScoreResult
from app.core.taskeval import PromptItem, build_task_report

REFERENCE_TEXT = "eval/reference.txt"


class CompareError(QuantDeskError):
    """The comparison cannot start (bad file, too few variants); the message says why."""

    default_kind = ErrorKind.REQUEST


@dataclass(frozen=True)
class Variant:
    """One file taking part: where it is, what the header says, its size on disk."""

    path: Path
    spec: ModelSpec
    size_bytes: int

    @property
    def quant(self) -> str:
        return self.spec.quant

    @property
    def label(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class CompareOptions:
    """Knobs of a comparison; the defaults suit the GUI and the CLI."""

    max_tokens: int = 128
    n_ctx: int = 2048
    sampling: Sampling = field(default_factory=lambda: Sampling.preset("greedy"))
    top_k: int = DEFAULT_TOP_K
    reference_text: str | None = None  # None: the shipped text; "": skip this pass
    reference_text_max_tokens: int | None = None
    chunk_tokens: int = 512
    memory_budget: int | None = None  # bytes; None: available memory less a margin
    mode: str | None = None  # force "parallel" or "sequential"
    threshold_pct: float = 5.0
    n_threads: int | None = None
    workers: tuple[str, ...] = ()  # RPC workers each variant's load may be split over


# ---- events ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanReady:
    plan: RunPlan
    variants: list[Variant]
    reference_index: int


@dataclass(frozen=True)
class VariantLoaded:
    index: int
    load_s: float


@dataclass(frozen=True)
class TextPiece:
    index: int
    item: int
    text: str


@dataclass(frozen=True)
class ReplyDone:
    index: int
    item: int
    stats: GenerationStats


@dataclass(frozen=True)
class Progress:
    stage: str  # "generate" | "score" | "reference text"
    done: int
    total: int


@dataclass(frozen=True)
class VariantFailed:
    index: int
    message: str


@dataclass(frozen=True)
class Finished:
    report: CompareReport


Event = PlanReady | VariantLoaded | TextPiece | ReplyDone | Progress | VariantFailed | Finished


# ---- preparation ----------------------------------------------------------------------------
def describe(path: str | Path) -> Variant:
    """Read a variant's header; a bad or missing file raises CompareError with the reason."""
    p = Path(path)
    try:
        spec = read_local(p)
    except GGUFError as exc:
        raise CompareError(f"{p.name}: {exc}") from exc
    return Variant(p, spec, p.stat().st_size)


def pick_reference(variants: list[Variant]) -> int:
    """The highest-precision variant: most bits per weight (F32 > F16/BF16 > Q8_0 > ...)."""
    return max(range(len(variants)), key=lambda i: variants[i].spec.bits_per_weight)


def _text_of(stats: GenerationStats | None) -> str | None:
    return stats.text if stats is not None else None


def reference_text(options: CompareOptions) -> str:
    if options.reference_text is not None:
        return options.reference_text
    return (paths.resources_dir() / REFERENCE_TEXT).read_text(encoding="utf-8")


# ---- running --------------------------------------------------------------------------------
class _Slot:
    """One variant during a run: its engine and what has been measured so far."""

    def __init__(self, index: int, variant: Variant) -> None:
        self.index = index
        self.variant = variant
        self.engine: Engine | None = None
        self.load_s: float | None = None
        self.replies: list[GenerationStats | None] = []
        self.reply_drift = Drift()
        self.text_drift = Drift()
        self.peak_rss = 0
        self.error: str | None = None

    def result(self) -> VariantResult:
        stats = [s for s in self.replies if s is not None]

        def mean(values: list[float]) -> float | None:
            values = [v for v in values if v > 0]
            return sum(values) / len(values) if values else None

        peak = max([self.peak_rss] + [s.peak_rss_bytes for s in stats])
        return VariantResult(
            model=str(self.variant.path),
            quant=self.variant.quant,
            size_bytes=self.variant.size_bytes,
            load_s=self.load_s,
            ttft_s=mean([s.ttft_s for s in stats]),
            prompt_tok_s=mean([s.prompt_tok_s for s in stats]),
            gen_tok_s=mean([s.gen_tok_s for s in stats]),
            peak_rss_bytes=peak or None,
            reply=self.reply_drift.summary(),
            reference_text=self.text_drift.summary(),
            text=stats[0].text if stats else "",
            error=self.error,
        )


def _fan_out(
    jobs: list[tuple[_Slot, Callable[[_Slot, Callable[[Any], None]], None]]],
) -> Iterator[Any]:
    """Run one job per slot in threads; yield the events they emit as they come.

    A job that raises a QuantDeskError (the engine failed, a plan or a worker said no) marks its
    slot failed (and yields VariantFailed); the others
    carry on.  Other exceptions are bugs and re-raised after every thread has ended.
    """
    events: queue.Queue[Any] = queue.Queue()
    done = object()
    bugs: list[BaseException] = []

    def run(slot: _Slot, job: Callable[[_Slot, Callable[[Any], None]], None]) -> None:
        try:
            job(slot, events.put)
        except QuantDeskError as exc:
            slot.error = str(exc)
            events.put(VariantFailed(slot.index, str(exc)))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            bugs.append(exc)
        finally:
            events.put(done)

    threads = [threading.Thread(target=run, args=j, daemon=True) for j in jobs]
    for t in threads:
        t.start()
    try:
        left = len(threads)
        while left:
            item = events.get()
            if item is done:
                left -= 1
            else:
                yield item
    finally:
        for t in threads:
            if t.is_alive():  # the consumer stopped early: stop the engines so threads end
                for slot, _ in jobs:
                    if slot.engine is not None:
                        slot.engine.close()
                break
        for t in threads:
            t.join()
    if bugs:
        raise bugs[0]


class _Run:
    def __init__(
        self,
        variants: list[Variant],
        items: list[PromptItem],
        ref: int,
        options: CompareOptions,
        cancel: CancelToken | None,
        planner: Planner,
    ) -> None:
        self.planner = (
            planner  # its options are the ones planned for: every variant loads with them
        )
        self.slots = [_Slot(i, v) for i, v in enumerate(variants)]
        self.items = items
        self.ref = ref
        self.options = options
        self.cancel = cancel
        # What the reference produced, for the variants scored after it.
        self.ref_reply: dict[int, ScoreResult] = {}
        self.ref_chunks: dict[int, ScoreResult] = {}
        self.chunks: list[list[int]] | None = None
        self.cancelled = False

    def stopped(self) -> bool:
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = True
        return self.cancelled

    def active(self, group: list[_Slot]) -> list[_Slot]:
        return [s for s in group if s.error is None and s.engine is not None]

    # -- jobs ----------------------------------------------------------------------------
    def _load(self, slot: _Slot, emit: Callable[[Any], None], n_threads: int | None) -> None:
        slot.engine = Engine()
        n_ctx = self.options.n_ctx
        # A comparison scores every position: the load reserves for that, as its plan did.
        scoring = self.planner.options.for_workload("score")
        kwargs: dict[str, Any] = {"n_ctx": n_ctx, **scoring.load_kwargs()}
        if self.options.workers:  # the plan decides whether (and how) it is split over them
            path, workers = slot.variant.path, self.options.workers
            plan = self.planner.plan_load(path, n_ctx, workers=workers, options=scoring)
            kwargs = plan.load_kwargs()
        info = slot.engine.load(slot.variant.path, n_threads=n_threads, **kwargs)
        slot.load_s = info.load_s
        emit(VariantLoaded(slot.index, info.load_s))

    def _generate(self, slot: _Slot, emit: Callable[[Any], None], k: int) -> None:
        assert slot.engine is not None
        req = GenerateRequest(
            messages=self.items[k].messages,
            max_tokens=self.options.max_tokens,
            sampling=self.options.sampling,
        )
        for piece in slot.engine.generate(req):
            if isinstance(piece, GenerationStats):
                slot.replies[k] = piece
                emit(ReplyDone(slot.index, k, piece))
            else:
                emit(TextPiece(slot.index, k, piece))
                if self.cancel is not None and self.cancel.is_set():
                    slot.engine.cancel()

    def _score(self, slot: _Slot, req: ScoreRequest, drift: Drift) -> ScoreResult:
        assert slot.engine is not None
        result: ScoreResult = slot.engine.request(req)
        drift.add(result)
        slot.peak_rss = max(slot.peak_rss, result.peak_rss_bytes)
        return result

    def _score_reply(self, slot: _Slot, emit: Callable[[Any], None], k: int) -> None:
        if slot.index == self.ref:
            stats = slot.replies[k]
            if stats is None or not stats.text:
                return  # an empty reference reply leaves nothing to teacher-force
            req = ScoreRequest(
                messages=self.items[k].messages, reply=stats.text, top_k=self.options.top_k
            )
            self.ref_reply[k] = self._score(slot, req, slot.reply_drift)
            return
        base = self.ref_reply.get(k)
        if base is None:
            return
        req = ScoreRequest(tokens=base.tokens, start=base.start, reference=base.reference)
        self._score(slot, req, slot.reply_drift)

    def _score_chunk(self, slot: _Slot, emit: Callable[[Any], None], c: int) -> None:
        assert self.chunks is not None
        if slot.index == self.ref:
            req = ScoreRequest(tokens=self.chunks[c], start=1, top_k=self.options.top_k)
            self.ref_chunks[c] = self._score(slot, req, slot.text_drift)
            return
        base = self.ref_chunks.get(c)
        if base is not None:
            req = ScoreRequest(tokens=base.tokens, start=1, reference=base.reference)
            self._score(slot, req, slot.text_drift)

    def _make_chunks(self, slot: _Slot) -> None:
        assert slot.engine is not None
        text = reference_text(self.options)
        size = max(16, min(self.options.chunk_tokens, self.options.n_ctx))
        if not text:
            self.chunks = []
            return
        bos = slot.engine.request(TokenizeRequest("", add_bos=True))
        body = slot.engine.request(TokenizeRequest(text, add_bos=False))
        if self.options.reference_text_max_tokens is not None:
            body = body[: self.options.reference_text_max_tokens]
        step = size - len(bos)
        self.chunks = [bos + body[i : i + step] for i in range(0, len(body), step)]
        self.chunks = [c for c in self.chunks if len(c) >= 2]

    # -- the stages of one group of variants that are loaded together ----------------------
    def group(self, group: list[_Slot], n_threads: int | None) -> Iterator[Any]:
        try:
            yield from _fan_out([(s, lambda s, e: self._load(s, e, n_threads)) for s in group])
            n_items = len(self.items)
            for k in range(n_items):
                if self.stopped():
                    return
                live = self.active(group)
                yield Progress("generate", k, n_items)
                yield from _fan_out([(s, partial(self._generate, k=k)) for s in live])
                if self.stopped():
                    return
                yield from self._ref_first(group, partial(self._score_reply, k=k))
            yield Progress("generate", n_items, n_items)
            ref_slot = self.slots[self.ref]
            if self.chunks is None and ref_slot in self.active(group):
                yield from _fan_out([(ref_slot, lambda s, e: self._make_chunks(s))])
            total = len(self.chunks or [])
            for c in range(total):
                if self.stopped():
                    return
                yield Progress("reference text", c, total)
                yield from self._ref_first(group, partial(self._score_chunk, c=c))
            if total:
                yield Progress("reference text", total, total)
        finally:
            for s in group:
                if s.engine is not None:
                    s.engine.close()
                    s.engine = None

    def _ref_first(self, group: list[_Slot], job: Callable[[_Slot, Any], None]) -> Iterator[Any]:
        """The reference scores first (the others need its distributions), then the rest at once."""
        live = self.active(group)
        ref = [s for s in live if s.index == self.ref]
        if ref:
            yield from _fan_out([(ref[0], job)])
        others = [s for s in live if s.index != self.ref]
        if others:
            yield from _fan_out([(s, job) for s in others])


def run_compare(
    paths_: Sequence[str | Path],
    items: list[PromptItem],
    *,
    reference: str | Path | None = None,
    options: CompareOptions | None = None,
    cancel: CancelToken | None = None,
    task_errors: list[Any] | None = None,
    planner: Planner | None = None,
) -> Iterator[Event]:
    """Compare variants on ``items`` (one prompt, a conversation, or a task file's lines).

    ``reference`` is one of the paths (or another file, added to the run); by default the
    highest-precision variant.  ``planner`` decides parallel or sequential and plans loads over
    workers (the caller's, or one made for this run and closed with it).
    """
    if planner is None:
        with Planner() as own:
            yield from run_compare(
                paths_,
                items,
                reference=reference,
                options=options,
                cancel=cancel,
                task_errors=task_errors,
                planner=own,
            )
        return
    options = options or CompareOptions()
    if not items:
        raise CompareError("nothing to compare: no prompt was given")
    variants = [describe(p) for p in paths_]
    if reference is not None:
        ref_path = Path(reference)
        matches = [i for i, v in enumerate(variants) if v.path == ref_path]
        if not matches:
            variants.append(describe(ref_path))
            matches = [len(variants) - 1]
        ref = matches[0]
    else:
        ref = pick_reference(variants) if variants else 0
    if len(variants) < 2:
        raise CompareError("pick at least two variants to compare")
    vocab = {v.spec.n_vocab for v in variants}
    if len(vocab) > 1:
        raise CompareError(
            "these files have different vocabularies (not variants of one model): "
            + ", ".join(f"{v.label}: {v.spec.n_vocab}" for v in variants)
        )
    files = [(v.path, v.spec) for v in variants]
    plan = planner.plan_compare(files, options.n_ctx, options.memory_budget, reference=ref)
    if options.mode in ("parallel", "sequential") and options.mode != plan.mode:
        plan = replace(
            plan, mode=options.mode, reason=f"{options.mode} as requested; {plan.reason}"
        )
    if options.workers and plan.mode == "parallel":
        # A worker serves one engine at a time: variants that use the workers take turns.
        plan = replace(
            plan,
            mode="sequential",
            reason=f"one after another: the workers serve one model at a time; {plan.reason}",
        )
    yield PlanReady(plan, variants, ref)
    run = _Run(variants, items, ref, options, cancel, planner)
    for slot in run.slots:
        slot.replies = [None] * len(items)
    if plan.mode == "parallel":
        n_threads = options.n_threads or max(1, (os.cpu_count() or 2) // len(variants))
        yield from run.group(run.slots, n_threads)
    else:
        order = [run.slots[ref]] + [s for s in run.slots if s.index != ref]
        for slot in order:
            if run.stopped():
                break
            yield from run.group([slot], options.n_threads)
    run.stopped()
    results = [s.result() for s in run.slots]
    task = None
    if any(item.line is not None for item in items) or task_errors:
        task = build_task_report(
            items,
            [[_text_of(s.replies[k]) for k in range(len(items))] for s in run.slots],
            ref,
            [(str(v.path), v.quant) for v in variants],
            options.threshold_pct,
            task_errors or [],
            run.cancelled,
        )
    yield Finished(
        CompareReport(
            reference=str(variants[ref].path),
            reference_index=ref,
            mode=plan.mode,
            mode_reason=plan.reason,
            results=results,
            task=task,
            cancelled=run.cancelled,
        )
    )

"""The one planning pipeline: what can this computer run, and how.

Every caller -- the CLI (``plan``, ``recommend``, ``compare``, ``chat``), the Models, Library, Chat and
Compare pages, and the local server -- asks a :class:`Planner`; nothing else reads headers for a plan,
starts dry runs or calls the fit.  The steps are always the same:

1. the header (a local file, or a Hub file over HTTP Range; split models shard by shard), cached
   per file so a re-plan at another context reads nothing again;
2. llama.cpp dry runs (``app.core.dryrun``) in the planner's own engine child, which never holds a
   model: a plan never runs in an engine whose loaded weights would skew its runtime figures;
3. the memory plan and offload (``app.core.fit``) against this machine's budget;
4. for several variants, the recommendation (``app.core.recommend``).

One planner serves a process: the window's (``app.ui.context.AppContext`` makes it and closes it
with the window), or :func:`default_planner` for ``serve``; one-shot commands and tests make their
own.  It is thread-safe: the GUI plans from worker threads while the server plans a load.  Its
``options`` are the memory settings in force (the app's from Settings); every load follows the
plan's :meth:`LoadPlan.load_kwargs`.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.cancel import CancelToken
from app.core.dryrun import DryRunner
from app.core.engine.protocol import MemorySettings
from app.core.errors import ErrorKind, QuantDeskError
from app.core.fit import (
    DEFAULT_RAM_MARGIN,
    WORKLOAD_OUTPUTS,
    WORKLOADS,
    Budget,
    DryRun,
    DryRunFn,
    OffloadPlan,
    Verdict,
    expert_kinds,
    plan_memory,
    plan_offload,
    workload_ram_bytes,
)
from app.core.gguf_header import (
    GGUFError,
    ModelSpec,
    merge_shards,
    read_local,
    read_url,
    shard_urls,
)
from app.core.hardware import HardwareProfile, detect
from app.core.recommend import Recommendation, VariantFit, budget_for, fit_variant, recommend
from app.core.speed import SpeedRule, measured_speed, memory_bandwidth
from app.core.units import human_bytes

if TYPE_CHECKING:
    from app.core.hub import Variant
    from app.core.library import LibraryModel

HEADER_READERS = 4  # parallel header reads: latency-bound on the real Hub
MIN_CTX = 256
_PROCESS_OVERHEAD = 160 * (1 << 20)  # an engine child with Python and llama.cpp loaded, no model


class PlanError(QuantDeskError):
    """The model cannot be loaded on this machine as planned (the message says why)."""

    default_kind = ErrorKind.NO_FIT


@dataclass(frozen=True)
class PlanOptions(MemorySettings):
    """The memory settings a plan is made for (the engine loads with the same ones; the plan's
    notes say which are in force), with the user's choices and the workloads' logit rows."""

    @classmethod
    def from_settings(
        cls, settings: object, type_k: str = "f16", type_v: str = "f16"
    ) -> PlanOptions:
        """The user's memory settings (``app.core.settings.Settings``) as plan options."""
        flash = {"on": True, "off": False}.get(str(getattr(settings, "flash_attn", "auto")))
        return cls(
            type_k,
            type_v,
            swa_full=bool(getattr(settings, "swa_full", False)),
            flash_attn=flash,
            n_ubatch=int(getattr(settings, "n_ubatch", 512)),
        )

    def for_workload(self, workload: str) -> PlanOptions:
        """These options for ``workload`` (fit.WORKLOADS): the logit rows it asks for."""
        if workload not in WORKLOAD_OUTPUTS:  # before any dry run: a typo is not a plan
            raise ValueError(f"unknown workload {workload!r} (one of {', '.join(WORKLOADS)})")
        return replace(self, n_outputs_max=WORKLOAD_OUTPUTS[workload])

    def load_kwargs(self) -> dict[str, Any]:
        """``Engine.load`` keywords for these settings (the load must follow what was planned)."""
        return {"memory": self.memory()}


# ---- results --------------------------------------------------------------------------------
@dataclass
class PlannedVariant:
    """The plan of one Hub variant at one context (or why there is none)."""

    variant: Variant
    n_ctx: int
    fit: VariantFit | None = None
    budget: Budget | None = None
    error: str = ""
    n_ctx_train: int = 0  # the context the model was trained for (from the header)
    # When it does not fit this computer alone but does split over the Settings workers:
    split: LoadPlan | None = None
    split_error: str = ""  # why the workers could not take it either

    @property
    def offload(self) -> OffloadPlan | None:
        return self.fit.offload if self.fit is not None else None

    @property
    def quant(self) -> str:
        """From the header's general.file_type (the file name's label is only a guess)."""
        return self.fit.quant if self.fit is not None else ""

    @property
    def bits_per_weight(self) -> float:
        return self.fit.bits_per_weight if self.fit is not None else 0.0


@dataclass
class RepoAdvice:
    """Which variant to take at this context, and why, in words."""

    n_ctx: int
    recommended: str | None  # the variant's file, None when nothing fits
    reason: str
    alternative: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelFit:
    """A fit for one library model (or why there is none)."""

    model_id: int
    fit: VariantFit | None
    error: str = ""


@dataclass(frozen=True)
class LoadPlan:
    """How to load a model: context size, GPU layers, the memory it will hold, and why."""

    n_ctx: int
    n_gpu_layers: int
    reason: str
    verdict: str = ""
    ram_bytes: int = 0
    vram_bytes: int = 0
    options: PlanOptions = field(default_factory=PlanOptions)
    # A model split over workers (app.core.split): pass both to the load; ``split`` has the why.
    rpc_servers: tuple[str, ...] = ()
    tensor_split: tuple[float, ...] = ()
    split: Any = None

    def load_kwargs(self) -> dict[str, Any]:
        """Every ``Engine.load`` keyword this plan decides (context, layers, settings, split)."""
        return {
            "n_ctx": self.n_ctx,
            "n_gpu_layers": self.n_gpu_layers,
            "rpc_servers": self.rpc_servers,
            "tensor_split": self.tensor_split,
            **self.options.load_kwargs(),
        }


@dataclass(frozen=True)
class RunPlan:
    """Parallel or sequential (a comparison), and the figures behind the choice."""

    mode: str
    reason: str
    need_bytes: list[int]
    budget_bytes: int


# ---- headers --------------------------------------------------------------------------------
class HeaderCache:
    """Parsed headers by file: a local path (with its size and mtime) or one shard's URL.

    A split model is cached shard by shard, so both the merged spec and the dry run's sparse files
    come from the same reads; a second plan of the same model sends no request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._specs: dict[tuple[str, ...], ModelSpec] = {}

    def url(self, url: str, headers: dict[str, str] | None = None) -> ModelSpec:
        key = ("url", url)
        with self._lock:
            hit = self._specs.get(key)
        if hit is not None:
            return hit
        spec = read_url(url, headers=headers)
        with self._lock:
            self._specs[key] = spec
        return spec

    def local(self, path: Path) -> ModelSpec:
        try:
            stat = path.stat()
        except OSError as exc:
            raise GGUFError(f"cannot open {path}: {exc.strerror or exc}") from exc
        key = ("file", str(path.resolve()), str(stat.st_size), str(stat.st_mtime_ns))
        with self._lock:
            hit = self._specs.get(key)
        if hit is not None:
            return hit
        spec = read_local(path)
        with self._lock:
            self._specs[key] = spec
        return spec

    def spec(self, source: str | Path, headers: dict[str, str] | None = None) -> ModelSpec:
        """The (merged, for a split model) spec of a path or URL; any shard names the model."""
        text = str(source)
        remote = text.startswith(("http://", "https://"))
        specs = [self.url(u, headers) if remote else self.local(Path(u)) for u in shard_urls(text)]
        return specs[0] if len(specs) == 1 else merge_shards(specs)


# ---- the planner ----------------------------------------------------------------------------
class Planner:
    """The planning pipeline of one process (see the module docstring); ``close()`` when done."""

    def __init__(
        self,
        profile: HardwareProfile | None = None,
        *,
        detector: Callable[[], HardwareProfile] = detect,
        runner: DryRunner | None = None,
        options: PlanOptions | None = None,
    ) -> None:
        self._lock = threading.Lock()
        # The memory settings plans are made for unless a call names its own (the app sets the
        # user's, from Settings; the engine then loads with the plan's).
        self.options = options or PlanOptions()
        self._profile = profile
        self._detector = detector
        self.runner = runner or DryRunner()
        self.headers = HeaderCache()

    # ---- machine ------------------------------------------------------------------------
    def profile(self, refresh: bool = False) -> HardwareProfile:
        """This machine (detected on first use, or again with ``refresh``): call off the GUI thread."""
        with self._lock:
            if self._profile is None or refresh:
                self._profile = self._detector()
            return self._profile

    def set_profile(self, profile: HardwareProfile) -> None:
        with self._lock:
            self._profile = profile

    def budget(self, ram_bytes: int | None = None, vram_bytes: int | None = None) -> Budget:
        """This machine's budget, or a what-if one where figures are given."""
        return budget_for(self.profile(), ram_bytes, vram_bytes)

    # ---- single files -------------------------------------------------------------------
    def spec(self, source: str | Path, headers: dict[str, str] | None = None) -> ModelSpec:
        return self.headers.spec(source, headers)

    def dry_fn(
        self,
        source: str | Path,
        spec: ModelSpec,
        options: PlanOptions | None = None,
        headers: dict[str, str] | None = None,
    ) -> DryRunFn:
        o = options or self.options
        return self.runner.dry_fn(
            source,
            spec,
            self.profile().gpu_build,
            headers,
            reader=lambda url: self.headers.url(url, headers),
            settings=o,
        )

    def fit(
        self,
        source: str | Path,
        n_ctx: int,
        *,
        name: str | None = None,
        options: PlanOptions | None = None,
        budget: Budget | None = None,
        headers: dict[str, str] | None = None,
    ) -> VariantFit:
        """The plan of one model (file or URL) at ``n_ctx`` under ``budget`` (this machine's)."""
        o = options or self.options
        spec = self.spec(source, headers)
        fn = self.dry_fn(source, spec, o, headers)
        label = name or Path(str(source).split("?")[0]).name
        return fit_variant(label, spec, fn, budget or self.budget(), n_ctx, o.type_k, o.type_v)

    def plan_load(
        self,
        path: str | Path,
        want_ctx: int,
        *,
        options: PlanOptions | None = None,
        budget: Budget | None = None,
        workers: list[str] | tuple[str, ...] | None = None,
    ) -> LoadPlan:
        """Context and GPU layers to load ``path`` with (:class:`PlanError` when nothing fits).

        The context is ``want_ctx`` (or the model's trained context when smaller); when it does
        not fit, the largest one that does is taken and the reason says so.
        """
        o = options or self.options
        spec = self.spec(path)
        want = max(MIN_CTX, min(want_ctx, int(spec.n_ctx_train or want_ctx)))
        budget = budget or self.budget()
        fn = self.dry_fn(path, spec, o)
        if workers:
            return _plan_with_workers(spec, fn(want, 0), want, budget, o, workers)
        offload = plan_offload(spec, budget, fn, want, o.type_k, o.type_v)
        n_ctx, reason = want, offload.reason
        if offload.verdict == "no_fit":
            if offload.max_ctx < MIN_CTX:
                raise PlanError(f"{Path(path).name} does not fit this machine: {offload.reason}")
            n_ctx = offload.max_ctx
            offload = plan_offload(spec, budget, fn, n_ctx, o.type_k, o.type_v)
            reason = f"context shortened to {n_ctx} tokens to fit; {offload.reason}"
        p = offload.plan
        if p.expert_cpu_bytes or o.cpu_moe_layers:  # the planner kept experts in RAM: load so
            extra = tuple(expert_kinds(spec, p.cpu_moe_layers)[: p.cpu_moe_extra])
            o = replace(o, cpu_moe_layers=p.cpu_moe_layers, cpu_moe_extra=extra)
        return LoadPlan(
            n_ctx, p.n_gpu_layers, reason, offload.verdict, p.ram_bytes, p.vram_bytes, o
        )

    # ---- many files ---------------------------------------------------------------------
    def plan_variants(
        self,
        variants: list[Variant],
        n_ctx: int,
        cancel: CancelToken | None = None,
        *,
        options: PlanOptions | None = None,
        budget: Budget | None = None,
        speed: SpeedRule | None = None,
        workers: list[str] | tuple[str, ...] = (),
    ) -> Iterator[PlannedVariant | RepoAdvice]:
        """Each Hub variant's plan as soon as it is known, then the :class:`RepoAdvice`.

        With ``workers``, a variant that does not fit this computer alone is planned split over
        them too (``PlannedVariant.split``; an unreachable worker leaves the variant's own plan).
        """
        from app.core import hub

        o = options or self.options
        budget = budget or self.budget()
        headers = hub.request_headers()
        stop = cancel or CancelToken()

        def header(variant: Variant) -> ModelSpec | Exception:
            if stop.is_set():
                return QuantDeskError("cancelled", ErrorKind.CANCELLED)
            try:
                return self.spec(
                    hub.file_url(variant.repo_id, variant.file, variant.commit), headers
                )
            except Exception as exc:  # shown on the row; the other variants still plan
                return QuantDeskError(explain_header_error(exc, variant.repo_id))

        fits: list[VariantFit] = []
        with ThreadPoolExecutor(max_workers=HEADER_READERS) as pool:
            for variant, spec in zip(variants, pool.map(header, variants), strict=True):
                if stop.is_set():
                    pool.shutdown(cancel_futures=True)
                    return
                if isinstance(spec, Exception):
                    yield PlannedVariant(variant, n_ctx, None, budget, error=str(spec))
                    continue
                url = hub.file_url(variant.repo_id, variant.file, variant.commit)
                try:
                    fn = self.dry_fn(url, spec, o, headers)
                    fit = fit_variant(variant.file, spec, fn, budget, n_ctx, o.type_k, o.type_v)
                except Exception as exc:  # llama.cpp refused the header, the engine died...
                    yield PlannedVariant(variant, n_ctx, None, budget, error=str(exc))
                    continue
                fits.append(fit)
                spread, why = None, ""
                if workers and fit.verdict == Verdict.NO_FIT:
                    try:
                        spread = _plan_with_workers(spec, fn(n_ctx, 0), n_ctx, budget, o, workers)
                    except QuantDeskError as exc:  # "does not fit" stands, and says why
                        why = str(exc)
                yield PlannedVariant(
                    variant,
                    n_ctx,
                    fit,
                    budget,
                    n_ctx_train=spec.n_ctx_train,
                    split=spread,
                    split_error=why,
                )
        if stop.is_set():
            return
        if not fits:
            yield RepoAdvice(n_ctx, None, "no variant could be planned")
            return
        yield advise(fits, budget, n_ctx, speed, self.profile().warnings)

    def recommend_sources(
        self,
        sources: list[tuple[str, str, dict[str, str] | None]],
        n_ctx: int,
        *,
        options: PlanOptions | None = None,
        budget: Budget | None = None,
        speed: SpeedRule | None = None,
    ) -> Recommendation:
        """A recommendation over ``(name, path or URL, request headers)`` (headers in parallel)."""
        if not sources:
            raise GGUFError("no .gguf variants to plan")
        o = options or self.options
        budget = budget or self.budget()
        with ThreadPoolExecutor(max_workers=HEADER_READERS) as pool:
            specs = list(pool.map(lambda s: self.spec(s[1], s[2]), sources))
        fits = [
            fit_variant(
                name, spec, self.dry_fn(src, spec, o, hdrs), budget, n_ctx, o.type_k, o.type_v
            )
            for (name, src, hdrs), spec in zip(sources, specs, strict=True)
        ]
        return recommend(fits, budget, speed=speed)

    def plan_library(
        self,
        models: Iterable[LibraryModel],
        n_ctx: int,
        cancel: CancelToken | None = None,
        *,
        options: PlanOptions | None = None,
    ) -> Iterator[ModelFit]:
        """One :class:`ModelFit` per library model at ``n_ctx``."""
        budget = self.budget()
        for model in models:
            if cancel is not None and cancel.is_set():
                return
            if not model.present:
                yield ModelFit(model.id, None, "file missing")
                continue
            try:
                fit = self.fit(model.path, n_ctx, name=model.name, options=options, budget=budget)
            except Exception as exc:  # shown on the row; the other models still plan
                yield ModelFit(model.id, None, str(exc))
                continue
            yield ModelFit(model.id, fit)

    def plan_compare(
        self,
        files: list[tuple[Path, ModelSpec]],
        n_ctx: int,
        budget_bytes: int | None = None,
        reference: int = 0,
    ) -> RunPlan:
        """Parallel when every variant's plan fits the budget together, sequential otherwise.

        A comparison scores: each variant's need is its scoring-pass plan (the logits of a whole
        batch), not a chat's, which on a large vocabulary is hundreds of MiB smaller; the
        reference (``files[reference]``) keeps its top-k distributions besides.
        """
        need = [
            self.need_bytes(path, spec, n_ctx, workload="reference" if i == reference else "score")
            for i, (path, spec) in enumerate(files)
        ]
        return run_plan(need, budget_bytes)

    def need_bytes(
        self,
        path: Path,
        spec: ModelSpec,
        n_ctx: int,
        *,
        workload: str = "chat",
        options: PlanOptions | None = None,
    ) -> int:
        """Resident memory one engine child needs for ``path`` on the CPU at ``n_ctx``.

        ``workload``: ``chat`` (a context filled by a conversation) or ``score`` (a comparison's
        teacher-forced pass, which holds a batch of logits besides).
        """
        o = (options or self.options).for_workload(workload)
        try:
            dry = self.dry_fn(path, spec, o)(n_ctx, 0)
        except QuantDeskError:
            # llama.cpp refused it (the load will say why): count the weights only, never a
            # formula over the file's layer count, which is not trusted here.
            return header_estimate(spec)
        plan = plan_memory(spec, dry, n_ctx, 0, o.type_k, o.type_v)
        return workload_ram_bytes(spec, dry, plan, workload)

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> Planner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plan_with_workers(
    spec: ModelSpec,
    dry: DryRun,
    n_ctx: int,
    budget: Budget,
    o: PlanOptions,
    workers: list[str] | tuple[str, ...],
) -> LoadPlan:
    """A load split over this computer and ``workers`` (each probed first, with a short timeout)."""
    from app.core import rpc, split

    try:
        addrs = rpc.parse_workers(list(workers))
    except rpc.WorkerError as exc:
        raise PlanError(str(exc)) from exc
    infos = rpc.probe_all(addrs)
    bad = [i for i in infos if not i.ok]
    if bad:
        raise PlanError("; ".join(f"worker {i.address}: {i.error}" for i in bad))
    devices = []
    if budget.vram_usable and not budget.unified:
        devices.append(split.SplitDevice("this GPU", "gpu", budget.vram_usable))
    devices.append(split.SplitDevice("this computer's RAM", "ram", budget.ram_usable))
    devices += [
        split.SplitDevice(f"worker {i.address}", "worker", i.free_bytes, i.address) for i in infos
    ]
    sp = split.plan_split(spec, dry, n_ctx, devices, o.type_k, o.type_v)
    if not sp.fits:
        raise PlanError(f"{spec.name or 'the model'} {sp.reason}")
    ram = next(s.total_bytes for s in sp.shares if s.kind == "ram")
    vram = sum(s.total_bytes for s in sp.shares if s.kind == "gpu")
    verdict = "split" if sp.rpc_servers else ("cpu" if sp.n_gpu_layers == 0 else "partial_gpu")
    return LoadPlan(
        n_ctx,
        sp.n_gpu_layers,
        sp.reason,
        verdict,
        ram,
        vram,
        o,
        sp.rpc_servers,
        sp.tensor_split,
        sp,
    )


def advise(
    fits: list[VariantFit],
    budget: Budget,
    n_ctx: int,
    speed: SpeedRule | None = None,
    warnings: Iterable[str] = (),
) -> RepoAdvice:
    """The recommendation over planned variants, in words (``speed``: the user's speed rule)."""
    rec = recommend(fits, budget, speed=speed)
    reason = f"{rec.reason}.\n{speed.describe()}" if speed is not None else rec.reason
    return RepoAdvice(
        n_ctx,
        rec.recommended.file if rec.recommended else None,
        reason,
        rec.alternative.file if rec.alternative else None,
        tuple(rec.notes) + tuple(warnings),
    )


def speed_rule(min_tok_s: float, measured: Mapping[str, str | Path] | None = None) -> SpeedRule:
    """The rule "at least ``min_tok_s`` tokens/s" with this machine's memory speed (measured once
    and cached) and the speeds measured for local files (``measured``: variant file -> path)."""
    found = {f: s for f, p in (measured or {}).items() if (s := measured_speed(p)) is not None}
    return SpeedRule(min_tok_s, memory_bandwidth(), measured=found)


def header_estimate(spec: ModelSpec) -> int:
    """A plan-free lower bound: the weights, the logits of one batch and an engine process."""
    return spec.weights_bytes + 4 * 512 * max(0, spec.n_vocab) + _PROCESS_OVERHEAD


def run_plan(need: list[int], budget_bytes: int | None = None) -> RunPlan:
    """Parallel when ``need`` fits ``budget_bytes`` (default: available memory less a margin)."""
    import psutil

    if budget_bytes is None:
        budget = max(0, psutil.virtual_memory().available - DEFAULT_RAM_MARGIN)
        source = "available memory less a margin"
    else:
        budget, source = budget_bytes, "the memory budget"
    total = sum(need)
    if total <= budget:
        reason = f"together they need {human_bytes(total)}, within {human_bytes(budget)} ({source})"
        return RunPlan("parallel", reason, need, budget)
    reason = (
        f"together they need {human_bytes(total)} but {source} is {human_bytes(budget)}: "
        "one after another, each unloaded before the next loads"
    )
    return RunPlan("sequential", reason, need, budget)


def explain_header_error(exc: BaseException, repo_id: str) -> str:
    """A header read's error in words: a refused request means a gated repo or a bad token."""
    code = getattr(exc, "status", None) or getattr(getattr(exc, "__cause__", None), "code", None)
    kind = getattr(exc, "kind", None)
    if code in (401, 403) or kind in (ErrorKind.AUTH, ErrorKind.GATED):
        return (
            f"{repo_id} refused access ({code or 'gated'}): it is gated or private. Accept its "
            "terms on the Hub website and set your Hub token in Settings."
        )
    return str(exc) or type(exc).__name__


# ---- the process-wide planner ---------------------------------------------------------------
_default: Planner | None = None
_default_lock = threading.Lock()


def default_planner() -> Planner:
    """The planner of this process (created on first use, closed at exit)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Planner()
            atexit.register(_close_default)
        return _default


def _close_default() -> None:
    global _default
    with _default_lock:
        planner, _default = _default, None
    if planner is not None:
        planner.close()

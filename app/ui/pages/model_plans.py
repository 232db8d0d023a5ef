"""Planning every variant of a repo at one context, off the GUI thread (the Models page's core glue).

:func:`plan_repo` is a generator for :class:`app.ui.bridge.LatestTask`: it yields one
:class:`PlannedVariant` per variant as soon as its plan is known (rows fill in one by one), then a
:class:`RepoAdvice` with the recommendation of ``app.core.recommend``.  Headers are read once per
variant over HTTP Range (in parallel) and kept in :class:`SpecCache`; dry runs are cached by
``app.core.dryrun``.  The same steps as ``quantdesk recommend``, split so each row can show early.
"""

from __future__ import annotations

import threading
import urllib.error
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.core import hub
from app.core.fit import Budget, OffloadPlan
from app.core.gguf_header import ModelSpec, read_spec
from app.core.hub import Variant
from app.core.recommend import VariantFit, budget_for, fit_variant, recommend
from app.ui.services import dry_runner, hardware_profile

if TYPE_CHECKING:
    from app.ui.bridge import CancelToken
    from app.ui.main_window import AppContext

HEADER_READERS = 4  # parallel header reads: latency-bound on the real Hub


@dataclass
class PlannedVariant:
    """The plan of one variant at one context (or why there is none)."""

    variant: Variant
    n_ctx: int
    fit: VariantFit | None = None
    budget: Budget | None = None
    error: str = ""
    n_ctx_train: int = 0  # the context the model was trained for (from the header)

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


class SpecCache:
    """Headers read from the Hub, by (repo, commit, file); shared by every plan of the page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._specs: dict[tuple[str, str, str], ModelSpec] = {}

    def get(self, variant: Variant) -> ModelSpec | None:
        with self._lock:
            return self._specs.get((variant.repo_id, variant.commit, variant.file))

    def put(self, variant: Variant, spec: ModelSpec) -> None:
        with self._lock:
            self._specs[(variant.repo_id, variant.commit, variant.file)] = spec


def _url(variant: Variant) -> str:
    return hub.file_url(variant.repo_id, variant.file, variant.commit)


def explain(exc: BaseException, variant: Variant) -> str:
    """An error of a header read in words: a refused request means a gated repo or a bad token."""
    cause = exc.__cause__
    code = getattr(cause, "code", None)
    if isinstance(cause, urllib.error.HTTPError) and code in (401, 403):
        return (
            f"{variant.repo_id} refused access ({code}): it is gated or private. Accept its terms "
            "on the Hub website and set your Hub token in Settings."
        )
    return str(exc) or type(exc).__name__


def plan_repo(
    variants: list[Variant],
    n_ctx: int,
    cancel: CancelToken,
    specs: SpecCache,
    context: AppContext,
) -> Iterator[PlannedVariant | RepoAdvice]:
    """Plan each variant at ``n_ctx`` on this machine; stops early when ``cancel`` is set."""
    profile = hardware_profile(context)
    budget = budget_for(profile)
    runner = dry_runner(context)
    headers = hub.request_headers()

    def header(variant: Variant) -> ModelSpec | Exception:
        cached = specs.get(variant)
        if cached is not None or cancel.is_set():
            return cached or RuntimeError("cancelled")
        try:
            spec = read_spec(_url(variant), headers=headers)
        except Exception as exc:  # shown on the row; the other variants still plan
            return RuntimeError(explain(exc, variant))
        specs.put(variant, spec)
        return spec

    fits: dict[str, VariantFit] = {}
    with ThreadPoolExecutor(max_workers=HEADER_READERS) as pool:
        for variant, spec in zip(variants, pool.map(header, variants), strict=True):
            if cancel.is_set():
                pool.shutdown(cancel_futures=True)
                return
            if isinstance(spec, Exception):
                yield PlannedVariant(variant, n_ctx, None, budget, error=str(spec))
                continue
            try:
                fn = runner.dry_fn(_url(variant), spec, "f16", "f16", profile.gpu_build, headers)
                fit = fit_variant(variant.file, spec, fn, budget, n_ctx)
            except Exception as exc:  # llama.cpp refused the header, the engine died...
                yield PlannedVariant(variant, n_ctx, None, budget, error=str(exc))
                continue
            fits[variant.file] = fit
            yield PlannedVariant(variant, n_ctx, fit, budget, n_ctx_train=spec.n_ctx_train)
    if cancel.is_set():
        return
    if not fits:
        yield RepoAdvice(n_ctx, None, "no variant could be planned")
        return
    rec = recommend(list(fits.values()), budget)
    yield RepoAdvice(
        n_ctx,
        rec.recommended.file if rec.recommended else None,
        rec.reason,
        rec.alternative.file if rec.alternative else None,
        tuple(rec.notes) + tuple(profile.warnings),
    )

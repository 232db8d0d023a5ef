"""The details panel of the Models page: why this variant, and where its memory goes.

For the selected variant it shows the verdict and reason, one stacked bar per device (weights,
KV cache, compute buffers and the safety margin against the device's budget), the largest context
that fits, the planner's notes, and the recommendation for the whole repo.

Signals:
    download_requested(object): the user clicked Download for this Variant.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QToolButton, QVBoxLayout, QWidget

from app.core.fit import Budget, MemoryPlan
from app.core.hub import Variant
from app.core.planning import PlannedVariant, RepoAdvice
from app.ui.pages.models.table import fit_badge
from app.ui.widgets.badges import FitBadge
from app.ui.widgets.cards import Card, PlainLabel, muted
from app.ui.widgets.format import human_bytes, human_count
from app.ui.widgets.memory_bar import MemoryBar, Segment


def weights_extra(plan: MemoryPlan) -> int:
    """Resident bytes llama.cpp holds for the CPU's weights beyond the file's tensors: repacked
    copies and whole pieces of the file the page cache keeps around the bytes it reads."""
    return max(0, plan.repacked_bytes + plan.mapped_resident_bytes - plan.weights_cpu_bytes)


def ram_segments(plan: MemoryPlan, budget: Budget) -> list[Segment]:
    """What must stay resident in system RAM (plus GPU memory on unified-memory machines).

    "Weights" is at most the file's tensors (never more than the file); what llama.cpp keeps
    beyond them counts as runtime, so the parts still add up to the plan's total.
    """
    resident = plan.repacked_bytes + plan.mapped_resident_bytes
    extra = weights_extra(plan)
    segments = [
        Segment("Weights", resident - extra, "weights"),
        Segment("KV cache", plan.kv_cpu_bytes, "kv"),
        Segment("Compute", plan.compute_cpu_bytes + plan.output_bytes, "compute"),
        Segment("Runtime", plan.overhead_bytes + extra, "other"),
    ]
    if budget.unified and plan.vram_bytes:
        segments.insert(1, Segment("GPU part", plan.vram_bytes, "output"))
    segments.append(Segment("Margin", budget.ram_margin, "margin"))
    return segments


def vram_segments(plan: MemoryPlan, budget: Budget) -> list[Segment]:
    return [
        Segment("Weights", plan.weights_gpu_bytes, "weights"),
        Segment("KV cache", plan.kv_gpu_bytes, "kv"),
        Segment("Compute", plan.compute_gpu_bytes, "compute"),
        Segment("Margin", budget.vram_margin, "margin"),
    ]


def plain_notes(plan: MemoryPlan, budget: Budget) -> list[str]:
    """The plan in plain words; the planner's technical notes go behind "Show details"."""
    lines = [
        f"Weights are the model file's numbers; the KV cache holds the conversation so far; "
        f"compute is llama.cpp's working memory; runtime is the engine itself. QuantDesk also "
        f"keeps {human_bytes(budget.ram_margin)} free as a safety margin."
    ]
    extra = weights_extra(plan)
    if extra:
        lines.append(
            f"Runtime includes {human_bytes(extra)} that llama.cpp keeps besides the file's "
            "weights (a rearranged copy for faster CPU maths and file pages held in memory)."
        )
    return lines


def max_context_words(fit: PlannedVariant) -> str:
    """The largest context in words, saying when the training length, not memory, limits it."""
    offload = fit.offload
    if offload is None or not offload.max_ctx:
        return "Does not fit at any context on this computer."
    words = (
        f"Largest context that fits: {human_count(offload.max_ctx)} tokens ({offload.max_ctx:,})"
    )
    if fit.n_ctx_train and offload.max_ctx >= fit.n_ctx_train:
        words += " — all the model was trained for"
    return words


class VariantDetails(Card):
    """Explains one variant's plan."""

    download_requested = Signal(object)
    show_local_requested = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Details", parent)
        self.variant: Variant | None = None
        self.local = False
        self._retry: Callable[[], None] | None = None
        head = QHBoxLayout()
        self.heading = PlainLabel("", name="cardTitle")
        self.heading.setWordWrap(True)
        self.badge = FitBadge()
        head.addWidget(self.heading)
        head.addWidget(self.badge)
        head.addStretch(1)
        self.download_button = QPushButton("Download")
        self.download_button.setObjectName("primary")
        self.download_button.clicked.connect(self._on_download)
        self.retry_button = QPushButton("Retry")
        self.retry_button.clicked.connect(self._on_retry)
        head.addWidget(self.retry_button)
        head.addWidget(self.download_button)
        self.add(head)
        self.file_label = muted(wrap=True)
        self.add(self.file_label)
        self.reason = muted()
        self.add(self.reason)
        bars = QWidget()
        self.bars = QVBoxLayout(bars)
        self.bars.setContentsMargins(0, 0, 0, 0)
        self.ram_bar = MemoryBar()
        self.vram_bar = MemoryBar()
        self.bars.addWidget(self.ram_bar)
        self.bars.addWidget(self.vram_bar)
        self.add(bars)
        self.max_ctx = PlainLabel("")
        self.max_ctx.setWordWrap(True)
        self.add(self.max_ctx)
        self.plain = muted()
        self.add(self.plain)
        self.details_toggle = QToolButton()
        self.details_toggle.setText("Show details")
        self.details_toggle.setCheckable(True)
        self.details_toggle.toggled.connect(self._on_details_toggled)
        self.add(self.details_toggle)
        self.notes = muted()  # the planner's technical notes, behind the toggle
        self.notes.setVisible(False)
        self.advice = muted()
        self.add(self.notes)
        self.add(self.advice)
        self.clear("")

    def clear(self, message: str) -> None:
        self.variant = None
        self.heading.setText(message)
        self.badge.hide()
        self.reason.setText("")
        self.file_label.setText("")
        self.ram_bar.hide()
        self.vram_bar.hide()
        self.max_ctx.setText("")
        self.plain.setText("")
        self.details_toggle.hide()
        self.notes.setText("")
        self.advice.setText("")
        self.download_button.hide()
        self.retry_button.hide()

    def show_error(
        self,
        message: str,
        retry: Callable[[], None] | None = None,
        headline: str = "Something went wrong",
    ) -> None:
        self.clear(headline)
        self.reason.setText(message)
        self._retry = retry
        self.retry_button.setVisible(retry is not None)

    def show_advice_only(self, advice: RepoAdvice) -> None:
        self.clear("Recommendation")
        self.advice.setText(advice.reason)

    def show_variant(
        self,
        variant: Variant,
        fit: PlannedVariant | None,
        advice: RepoAdvice | None,
        local: bool = False,
    ) -> None:
        """The plan of ``variant``; ``local``: it is in the library already (no Download then)."""
        self.clear(f"{variant.quant} · {human_bytes(variant.size_bytes)}")
        self.variant = variant
        self.local = local
        self.file_label.setText(
            variant.file + (f" (+{variant.shards - 1} more files)" if variant.shards > 1 else "")
        )
        self.download_button.setText("In library" if local else f"Download {variant.quant}")
        self.download_button.show()
        verdict, text = fit_badge(fit)
        self.badge.set_verdict(verdict, text)
        self.badge.show()
        if advice is not None:
            star = "★ Recommended. " if advice.recommended == variant.file else "Recommended: "
            self.advice.setText(star + advice.reason + "".join(f"\n⚠ {w}" for w in advice.warnings))
        if fit is None:
            self.reason.setText("Checking whether it fits…")
            return
        if fit.error or fit.offload is None or fit.budget is None:
            self.reason.setText(f"Could not plan this variant: {fit.error}")
            return
        offload, budget = fit.offload, fit.budget
        plan = offload.plan
        self.heading.setText(
            f"{fit.quant or variant.quant} · {human_bytes(variant.size_bytes)} · "
            f"{human_count(fit.n_ctx)} context"
        )
        self.reason.setText(offload.reason[:1].upper() + offload.reason[1:] + ".")
        title = "Unified memory" if budget.unified else "System RAM"
        self.ram_bar.set_data(title, ram_segments(plan, budget), budget.ram_bytes)
        self.ram_bar.show()
        if budget.vram_bytes and not budget.unified:
            self.vram_bar.set_data("GPU memory", vram_segments(plan, budget), budget.vram_bytes)
            self.vram_bar.show()
        self.max_ctx.setText(max_context_words(fit))
        notes = [f"• {n}" for n in plan.notes]
        if fit.n_ctx_train and fit.n_ctx > fit.n_ctx_train:
            notes.insert(
                0,
                f"⚠ {human_count(fit.n_ctx)} tokens is more than the "
                f"{human_count(fit.n_ctx_train)} this model was trained for: replies degrade "
                "past that point.",
            )
        warnings = [n for n in notes if n.startswith("⚠")]  # plain words already: shown
        notes = [n for n in notes if n not in warnings]
        self.notes.setText("\n".join(notes))
        self.plain.setText("\n".join(warnings + plain_notes(plan, budget)))
        self.details_toggle.setVisible(bool(notes))

    def _on_details_toggled(self, on: bool) -> None:
        self.details_toggle.setText("Hide details" if on else "Show details")
        self.notes.setVisible(on)

    def _on_download(self) -> None:
        if self.variant is not None:
            signal = self.show_local_requested if self.local else self.download_requested
            signal.emit(self.variant)

    def _on_retry(self) -> None:
        if self._retry is not None:
            self._retry()

"""The variants table of the Models page: one row per variant of a repo, re-planned live.

Rows start as "Checking…" and fill in as the plan of each variant arrives from the worker thread
(:class:`app.core.planning.PlannedVariant`).  The recommended row is bold, starred and tinted.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor, QFont

from app.core.hub import Variant
from app.core.planning import PlannedVariant
from app.ui.widgets.badges import BADGE_ROLE, badge_text
from app.ui.widgets.cards import plain_tooltip
from app.ui.widgets.format import human_bytes, human_count
from app.ui.widgets.style import ACCENT

COLUMNS = ["Quant", "Size", "Bits", "Fit", "Max context", "File", ""]
_HEADER_TIPS = {
    2: "Bits per weight: more bits, closer to the original model",
    4: "The largest context that fits this computer",
}
COL_QUANT, COL_SIZE, COL_BPW, COL_FIT, COL_MAXCTX, COL_FILE, COL_ACTION = range(len(COLUMNS))
_Index = QModelIndex | QPersistentModelIndex


def fit_badge(fit: PlannedVariant | None) -> tuple[str, str]:
    """``(verdict, text)`` for the badge of a row."""
    if fit is None:
        return ("unknown", badge_text("unknown"))
    if fit.error:
        return ("unknown", "Unknown")
    plan = fit.offload
    assert plan is not None
    if fit.split is not None and fit.split.split is not None:
        return ("split", f"Split over {fit.split.split.n_computers} computers")
    return (
        plan.verdict,
        badge_text(plan.verdict, plan.plan.n_gpu_layers, plan.plan.n_layers_total),
    )


class VariantTableModel(QAbstractTableModel):
    """Variants of one repo with their fit at the chosen context."""

    def __init__(self) -> None:
        super().__init__()
        self.variants: list[Variant] = []
        self.fits: dict[str, PlannedVariant] = {}
        self.recommended: str | None = None
        self.speeds: dict[str, float] = {}  # file -> estimated tokens/s (the Models page's rule)
        self.measured: set[str] = set()  # files whose speed a real run measured

    # --- data in ---------------------------------------------------------------------------
    def set_variants(self, variants: list[Variant]) -> None:
        self.beginResetModel()
        self.variants = list(variants)
        self.fits = {}
        self.recommended = None
        self.endResetModel()

    def clear_fits(self) -> None:
        """A new context: every row goes back to "Checking…" until its new plan arrives."""
        self.fits = {}
        self.recommended = None
        self._all_changed()

    def set_fit(self, fit: PlannedVariant) -> None:
        self.fits[fit.variant.file] = fit
        row = self.row_of(fit.variant.file)
        if row is not None:
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def set_recommended(self, file: str | None) -> None:
        self.recommended = file
        self._all_changed()

    def _all_changed(self) -> None:
        if self.variants:
            self.dataChanged.emit(
                self.index(0, 0), self.index(len(self.variants) - 1, len(COLUMNS) - 1)
            )

    def row_of(self, file: str) -> int | None:
        for row, v in enumerate(self.variants):
            if v.file == file:
                return row
        return None

    def fit_at(self, row: int) -> PlannedVariant | None:
        if 0 <= row < len(self.variants):
            return self.fits.get(self.variants[row].file)
        return None

    # --- Qt model ----------------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802, B008 - Qt's API
        return 0 if parent.isValid() else len(self.variants)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802, B008 - Qt's API
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(  # noqa: N802 - Qt's name
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return _HEADER_TIPS.get(section)
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        variant = self.variants[index.row()]
        fit = self.fits.get(variant.file)
        col = index.column()
        recommended = variant.file == self.recommended
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(variant, fit, col, recommended)
        if role == BADGE_ROLE and col == COL_FIT:
            return fit_badge(fit)
        if role == Qt.ItemDataRole.ToolTipRole:
            return plain_tooltip(self._tooltip(variant, fit, col))
        if role == Qt.ItemDataRole.FontRole and recommended:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.BackgroundRole and recommended:
            tint = QColor(ACCENT)
            tint.setAlpha(40)
            return QBrush(tint)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_SIZE, COL_BPW, COL_MAXCTX):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _tooltip(self, variant: Variant, fit: PlannedVariant | None, col: int) -> str:
        if fit is not None and fit.error:
            return fit.error
        if col == COL_QUANT:
            return f"{variant.file}\n{variant.repo_id} @ {variant.commit[:12]}"
        if col == COL_SIZE:
            shards = f" in {variant.shards} files" if variant.shards > 1 else ""
            return f"{human_bytes(variant.size_bytes)}{shards} ({variant.size_bytes:,} bytes)"
        if col == COL_MAXCTX and fit is not None and fit.n_ctx_train:
            return f"Trained for {fit.n_ctx_train:,} tokens of context"
        if fit is not None and fit.offload is not None:
            rate = self.speeds.get(variant.file)
            how = "measured in a comparison" if variant.file in self.measured else "estimate"
            guess = f"\nAbout {rate:.1f} tokens/s on this machine ({how})" if rate else ""
            if fit.split is not None:  # too big here alone; the Settings workers take the rest
                return f"{fit.offload.reason}.\nWith the workers in Settings: {fit.split.reason}"
            if fit.split_error:
                return f"{fit.offload.reason}.\nThe workers in Settings: {fit.split_error}"
            return fit.offload.reason + guess
        return ""

    @staticmethod
    def _text(variant: Variant, fit: PlannedVariant | None, col: int, recommended: bool) -> str:
        if col == COL_QUANT:
            star = "★ " if recommended else ""
            confirmed = fit is not None and fit.quant and fit.quant != variant.quant
            return star + (fit.quant if confirmed and fit is not None else variant.quant)
        if col == COL_SIZE:
            # Split models say so in the tooltip and the details: the column stays narrow.
            return human_bytes(variant.size_bytes) + (
                f" ({variant.shards})" if variant.shards > 1 else ""
            )
        if col == COL_BPW:
            return f"{fit.bits_per_weight:.2f}" if fit is not None and fit.bits_per_weight else ""
        if col == COL_MAXCTX:
            if fit is None or fit.offload is None:
                return ""
            return human_count(fit.offload.max_ctx) if fit.offload.max_ctx else "none"
        if col == COL_FILE:
            return variant.file
        return ""

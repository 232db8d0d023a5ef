"""Fit badges: a coloured pill saying where a model variant runs (full GPU, partial, CPU, no fit).

:class:`FitBadge` is the standalone widget; :class:`BadgeDelegate` paints the same pill inside a
table cell whose ``Qt.UserRole`` data is ``(verdict, text)``, so a long table costs no child widgets.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QSizePolicy,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from app.ui.widgets.cards import plain_tooltip
from app.ui.widgets.style import color

BADGE_ROLE = Qt.ItemDataRole.UserRole + 1

_LABELS = {
    "full_gpu": "Full GPU",
    "partial_gpu": "Partial GPU",
    "cpu": "CPU",
    "no_fit": "Does not fit",
    "split": "Split over computers",
    "unknown": "Checking…",
}


def badge_text(verdict: str, n_gpu_layers: int | None = None, n_layers: int | None = None) -> str:
    """The words on a badge: ``Partial GPU 20/32 layers`` carries the split, the others do not."""
    label = _LABELS.get(verdict, verdict.replace("_", " ").capitalize())
    if verdict == "partial_gpu" and n_gpu_layers is not None and n_layers:
        return f"{label} {n_gpu_layers}/{n_layers} layers"
    return label


def _badge_font(base: QFont) -> QFont:
    font = QFont(base)
    font.setBold(True)
    font.setPointSizeF(max(7.0, base.pointSizeF() * 0.9))
    return font


def paint_badge(painter: QPainter, rect: QRect, verdict: str, text: str, base: QFont) -> None:
    """Draw a pill left-aligned and vertically centred in ``rect``."""
    font = _badge_font(base)
    metrics = QFontMetrics(font)
    width = min(rect.width(), metrics.horizontalAdvance(text) + 16)
    height = min(rect.height(), metrics.height() + 6)
    pill = QRect(rect.left(), rect.top() + (rect.height() - height) // 2, width, height)
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(color(verdict))
    painter.drawRoundedRect(pill, height / 2, height / 2)
    painter.setPen(QColor("white"))
    painter.setFont(font)
    painter.drawText(pill, Qt.AlignmentFlag.AlignCenter, text)
    painter.restore()


def badge_size(text: str, base: QFont) -> QSize:
    metrics = QFontMetrics(_badge_font(base))
    return QSize(metrics.horizontalAdvance(text) + 16, metrics.height() + 6)


class FitBadge(QWidget):
    """A fit verdict as a coloured pill."""

    def __init__(self, verdict: str = "unknown", text: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.verdict = verdict
        self.text = text or badge_text(verdict)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.setToolTip(plain_tooltip(self.text))

    def set_verdict(self, verdict: str, text: str = "") -> None:
        self.verdict = verdict
        self.text = text or badge_text(verdict)
        self.setToolTip(plain_tooltip(self.text))
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return badge_size(self.text, self.font())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return self.sizeHint()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        paint_badge(painter, self.rect(), self.verdict, self.text, self.font())


class BadgeDelegate(QStyledItemDelegate):
    """Paints ``(verdict, text)`` from BADGE_ROLE as a pill; falls back to plain text otherwise."""

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        data = index.data(BADGE_ROLE)
        if not data:
            super().paint(painter, option, index)
            return
        # Selection/hover background first, then the pill on top of it.
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        widget = option.widget
        style = widget.style() if widget is not None else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)
        verdict, text = data
        paint_badge(painter, option.rect.adjusted(6, 3, -4, -3), verdict, text, option.font)

    def sizeHint(  # noqa: N802 - Qt's name
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        data = index.data(BADGE_ROLE)
        if not data:
            return super().sizeHint(option, index)
        size = badge_size(data[1], option.font)
        return QSize(size.width() + 12, size.height() + 8)

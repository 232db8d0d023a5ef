"""A stacked bar of memory parts (weights, KV cache, compute, margin) against one device's budget.

Each device of a plan (system RAM, each GPU) gets one :class:`MemoryBar`.  The bar's full width is
the larger of the budget and the total, so an over-budget plan visibly runs past the budget marker.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import (
    QColor,
    QFontMetrics,
    QPainter,
    QPaintEvent,
    QPalette,
    QPen,
    QResizeEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.ui.widgets.cards import plain_tooltip
from app.ui.widgets.format import human_bytes
from app.ui.widgets.style import ERROR, color


@dataclass(frozen=True)
class Segment:
    """One part of the bar: ``kind`` picks the colour (see style.MEMORY_COLORS)."""

    label: str
    nbytes: int
    kind: str


class MemoryBar(QWidget):
    """Title line, stacked bar with a budget marker, and a legend with sizes."""

    BAR_HEIGHT = 16

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = ""
        self.segments: list[Segment] = []
        self.budget = 0
        self.caption = ""
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_data(self, title: str, segments: list[Segment], budget: int, caption: str = "") -> None:
        """``caption`` replaces the "used of budget" text on the right of the title line."""
        self.title = title
        self.caption = caption
        self.segments = [s for s in segments if s.nbytes > 0]
        self.budget = max(0, int(budget))
        self.setToolTip(plain_tooltip(self.summary()))
        self.setFixedHeight(self._height_for(max(1, self.width() - 2)))
        self.update()

    @property
    def total(self) -> int:
        return sum(s.nbytes for s in self.segments)

    def summary(self) -> str:
        """The bar in words (tooltip, accessibility, tests)."""
        parts = ", ".join(f"{s.label} {human_bytes(s.nbytes)}" for s in self.segments)
        verdict = "over budget" if self.budget and self.total > self.budget else "within budget"
        return (
            f"{self.title}: {human_bytes(self.total)} of {human_bytes(self.budget)} "
            f"({verdict}); {parts}"
        )

    def _line(self) -> int:
        return QFontMetrics(self.font()).height()

    def _legend_rows(self, width: int) -> list[list[tuple[Segment, str]]]:
        """The legend's entries, wrapped onto as many lines as ``width`` needs (none is cut)."""
        metrics = QFontMetrics(self.font())
        rows: list[list[tuple[Segment, str]]] = [[]]
        x = 0
        for seg in self.segments:
            label = f"{seg.label} {human_bytes(seg.nbytes)}"
            w = 14 + metrics.horizontalAdvance(label) + 14
            if rows[-1] and x + w - 14 > width:
                rows.append([])
                x = 0
            rows[-1].append((seg, label))
            x += w
        return rows

    def _height_for(self, width: int) -> int:
        return self._line() * (1 + len(self._legend_rows(width))) + self.BAR_HEIGHT + 14

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self.setFixedHeight(self._height_for(max(1, self.width() - 2)))

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(360, self._height_for(max(1, self.width() - 2)))

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(160, self.sizeHint().height())

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        line = self._line()
        width = self.width() - 2
        text_pen = pal.color(QPalette.ColorRole.WindowText)
        muted = pal.color(QPalette.ColorRole.PlaceholderText)

        # Title: device on the left, "used / budget" on the right (red when over).
        over = self.budget > 0 and self.total > self.budget
        painter.setPen(text_pen)
        font = self.font()
        font.setBold(True)
        painter.setFont(font)
        painter.drawText(QRectF(1, 0, width, line), Qt.AlignmentFlag.AlignLeft, self.title)
        painter.setFont(self.font())
        painter.setPen(QColor(ERROR) if over else muted)
        used = self.caption or f"{human_bytes(self.total)} of {human_bytes(self.budget)}"
        painter.drawText(QRectF(1, 0, width, line), Qt.AlignmentFlag.AlignRight, used)

        # Bar
        top = line + 4
        scale_max = max(self.total, self.budget, 1)
        track = QRectF(1, top, width, self.BAR_HEIGHT)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(pal.color(QPalette.ColorRole.Midlight))
        painter.drawRoundedRect(track, 4, 4)
        x = 1.0
        painter.save()
        clip = QRectF(track)
        painter.setClipRect(clip)
        for seg in self.segments:
            w = max(3.0, width * seg.nbytes / scale_max)  # a tiny part stays visible
            painter.setBrush(color(seg.kind))
            painter.drawRect(QRectF(x, top, w, self.BAR_HEIGHT))
            x += w
        painter.restore()
        if self.budget:
            bx = 1 + width * self.budget / scale_max
            painter.setPen(QPen(QColor(ERROR) if over else text_pen, 2))
            painter.drawLine(int(bx), int(top - 3), int(bx), int(top + self.BAR_HEIGHT + 3))

        # Legend, wrapped: every part and its size shows, so they add up to the title's figure.
        y = top + self.BAR_HEIGHT + 6
        metrics = QFontMetrics(self.font())
        for row in self._legend_rows(width):
            x = 1.0
            for seg, label in row:
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(color(seg.kind))
                painter.drawRoundedRect(QRectF(x, y + line / 2 - 5, 10, 10), 2, 2)
                painter.setPen(muted)
                painter.drawText(QRectF(x + 14, y, width, line), Qt.AlignmentFlag.AlignLeft, label)
                x += 14 + metrics.horizontalAdvance(label) + 14
            y += line

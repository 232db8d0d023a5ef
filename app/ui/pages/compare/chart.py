"""Quality against size and against speed: two small scatter plots drawn with QPainter.

QtCharts is not part of PySide6-Essentials, and two scatters need little: axes, a few ticks and
one labelled dot per variant.  The y axis is the mean KL divergence from the reference (lower is
better); the reference sits at zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPaintEvent, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.ui.widgets.style import ACCENT, SUCCESS

PANELS = (
    "Quality loss vs file size (lower is better)",
    "Quality loss vs speed (lower is better)",
)
Y_TITLE = "loss (KLD)"


@dataclass(frozen=True)
class ChartPoint:
    label: str
    size_gb: float | None
    gen_tok_s: float | None
    kld: float | None
    reference: bool = False


class QualityChart(QWidget):
    """Two panels: KL divergence vs file size, and vs generation speed.

    The reference is drawn green (at zero), the other variants in the accent colour.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[ChartPoint] = []
        self.setMinimumSize(380, 150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_points(self, points: list[ChartPoint]) -> None:
        self.points = points
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w = self.width() / 2
        self._panel(
            p, QRectF(0, 0, w, self.height()), PANELS[0], "file size (GB)", lambda c: c.size_gb
        )
        self._panel(
            p,
            QRectF(w, 0, w, self.height()),
            PANELS[1],
            "generation (tok/s)",
            lambda c: c.gen_tok_s,
        )
        p.end()

    def _panel(
        self,
        p: QPainter,
        area: QRectF,
        title: str,
        x_title: str,
        x_of: Callable[[ChartPoint], float | None],
    ) -> None:
        fg = self.palette().windowText().color()
        muted = self.palette().color(QPalette.ColorRole.PlaceholderText)
        metrics = QFontMetrics(p.font())
        line = metrics.height()
        # Left: the rotated y title and the tick labels; bottom: tick labels and the x title.
        plot = area.adjusted(line + 44, line + 14, -18, -(2 * line + 10))
        p.setPen(QPen(fg, 1))
        _text(p, metrics, QRectF(area.left() + 6, area.top() + 4, area.width() - 12, line), title)
        p.setPen(QPen(muted, 1))
        _text(
            p,
            metrics,
            QRectF(plot.left(), plot.bottom() + line + 6, plot.width(), line),
            x_title,
            Qt.AlignmentFlag.AlignHCenter,
        )
        p.save()
        p.translate(area.left() + 4, plot.bottom())
        p.rotate(-90)
        _text(p, metrics, QRectF(0, 0, plot.height(), line), Y_TITLE, Qt.AlignmentFlag.AlignHCenter)
        p.restore()
        p.setPen(QPen(muted, 1))
        p.drawLine(plot.bottomLeft(), plot.bottomRight())
        p.drawLine(plot.bottomLeft(), plot.topLeft())
        pts: list[tuple[float, float, ChartPoint]] = []
        for c in self.points:
            x_value = x_of(c)
            if x_value is not None and c.kld is not None:
                pts.append((x_value, c.kld, c))
        if not pts:
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, "no measurements yet")
            return
        x_max = _nice(max(x for x, _, _ in pts) * 1.1)
        y_max = _nice(max(y for _, y, _ in pts) * 1.1)
        tick_w = line + 40
        for frac in (0.0, 0.5, 1.0):
            yv, xv = y_max * frac, x_max * frac
            y = plot.bottom() - frac * plot.height()
            x = plot.left() + frac * plot.width()
            p.drawText(
                QRectF(plot.left() - tick_w - 4, y - line / 2, tick_w, line),
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                _tick(yv),
            )
            label = QRectF(x - 30, plot.bottom() + 3, 60, line)
            label.moveRight(min(label.right(), area.right() - 2))
            p.drawText(label, Qt.AlignmentFlag.AlignCenter, _tick(xv))
        taken: list[QRectF] = []
        for x, y, c in pts:
            at = QPointF(
                plot.left() + x / x_max * plot.width(), plot.bottom() - y / y_max * plot.height()
            )
            color = QColor(SUCCESS) if c.reference else QColor(ACCENT)
            p.setPen(QPen(color, 1))
            p.setBrush(color)
            p.drawEllipse(at, 4.5, 4.5)
            p.setPen(QPen(fg, 1))
            # Labels near the right edge go on the left of their dot, so they stay inside; a label
            # that would cover another one moves up a line (close quants often sit together).
            width = metrics.horizontalAdvance(c.label)
            dx = 7 if at.x() + 7 + width <= area.right() - 2 else -7 - width
            box = QRectF(at.x() + dx, at.y() - 5 - metrics.ascent(), width, line)
            hit = [t for t in taken if box.intersects(t)]
            while hit and box.top() > area.top() + line:
                box.moveBottom(min(t.top() for t in hit))
                hit = [t for t in taken if box.intersects(t)]
            taken.append(box)
            p.drawText(box, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, c.label)


def _nice(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above ``value`` (an axis end)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value)


def _tick(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _text(
    p: QPainter,
    metrics: QFontMetrics,
    rect: QRectF,
    text: str,
    align: Qt.AlignmentFlag = Qt.AlignmentFlag.AlignLeft,
) -> None:
    """One line of text, elided to ``rect``'s width rather than cut off."""
    elided = metrics.elidedText(text, Qt.TextElideMode.ElideRight, int(rect.width()))
    p.drawText(rect, align | Qt.AlignmentFlag.AlignVCenter, elided)

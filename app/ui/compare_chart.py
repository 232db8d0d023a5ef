"""Quality against size and against speed: two small scatter plots drawn with QPainter.

QtCharts is not part of PySide6-Essentials, and two scatters need little: axes, a few ticks and
one labelled dot per variant.  The y axis is the mean KL divergence from the reference (lower is
better); the reference sits at zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget


@dataclass(frozen=True)
class ChartPoint:
    label: str
    size_mib: float | None
    gen_tok_s: float | None
    kld: float | None
    reference: bool = False


class QualityChart(QWidget):
    """Two panels: KL divergence vs file size, and vs generation speed."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[ChartPoint] = []
        self.setMinimumSize(420, 220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_points(self, points: list[ChartPoint]) -> None:
        self.points = points
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w = self.width() / 2
        self._panel(p, QRectF(0, 0, w, self.height()), "size (MiB)", lambda c: c.size_mib)
        self._panel(p, QRectF(w, 0, w, self.height()), "generation tok/s", lambda c: c.gen_tok_s)
        p.end()

    def _panel(self, p: QPainter, area: QRectF, x_title: str, x_of) -> None:
        fg = self.palette().windowText().color()
        plot = area.adjusted(52, 24, -14, -40)
        p.setPen(QPen(fg, 1))
        p.drawLine(plot.bottomLeft(), plot.bottomRight())
        p.drawLine(plot.bottomLeft(), plot.topLeft())
        p.drawText(
            QRectF(plot.left(), area.bottom() - 20, plot.width(), 18),
            Qt.AlignmentFlag.AlignCenter,
            x_title,
        )
        p.drawText(
            QRectF(area.left() + 4, area.top() + 2, area.width(), 18),
            Qt.AlignmentFlag.AlignLeft,
            "KL divergence (nats, lower is better)",
        )
        pts = [(x_of(c), c.kld, c) for c in self.points]
        pts = [(x, y, c) for x, y, c in pts if x is not None and y is not None]
        if not pts:
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, "no measurements yet")
            return
        x_max = max(x for x, _, _ in pts) * 1.1 or 1.0
        y_max = max(y for _, y, _ in pts) * 1.15 or 1.0
        for frac in (0.0, 0.5, 1.0):
            yv, xv = y_max * frac, x_max * frac
            y = plot.bottom() - frac * plot.height()
            x = plot.left() + frac * plot.width()
            p.drawText(QRectF(area.left(), y - 8, 48, 16), Qt.AlignmentFlag.AlignRight, f"{yv:.3g}")
            p.drawText(
                QRectF(x - 30, plot.bottom() + 2, 60, 16), Qt.AlignmentFlag.AlignCenter, f"{xv:.3g}"
            )
        for x, y, c in pts:
            at = QPointF(
                plot.left() + x / x_max * plot.width(), plot.bottom() - y / y_max * plot.height()
            )
            color = QColor("#2e7d32") if c.reference else QColor("#1565c0")
            p.setPen(QPen(color, 1))
            p.setBrush(color)
            p.drawEllipse(at, 4.5, 4.5)
            p.setPen(QPen(fg, 1))
            p.drawText(at + QPointF(7, -5), c.label)

"""The application icon: the packaged files in resources/icons when present, else one drawn here."""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QIcon, QLinearGradient, QPainter, QPixmap

from app.core import paths
from app.ui.widgets.style import ACCENT


def _drawn(size: int) -> QPixmap:
    """A rounded square with a 'Q' -- only used until the packaging icons exist."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    gradient = QLinearGradient(0, 0, size, size)
    gradient.setColorAt(0, QColor(ACCENT))
    gradient.setColorAt(1, QColor("#2a3fa8"))
    painter.setBrush(gradient)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.drawRoundedRect(QRectF(0, 0, size, size), size * 0.22, size * 0.22)
    font = QFont()
    font.setBold(True)
    font.setPixelSize(int(size * 0.62))
    painter.setFont(font)
    painter.setPen(QColor("white"))
    painter.drawText(QRectF(0, 0, size, size), Qt.AlignmentFlag.AlignCenter, "Q")
    painter.end()
    return pixmap


@lru_cache(maxsize=1)
def app_icon() -> QIcon:
    """Every PNG/SVG in resources/icons (largest set wins), falling back to a drawn icon."""
    folder = paths.resources_dir() / "icons"
    icon = QIcon()
    if folder.is_dir():
        for path in sorted(folder.rglob("*.png")):
            icon.addFile(str(path))
        if icon.isNull():
            for path in sorted(folder.rglob("*.svg")):
                icon.addFile(str(path))
    if icon.isNull():
        for size in (16, 32, 64, 128, 256):
            icon.addPixmap(_drawn(size))
    return icon

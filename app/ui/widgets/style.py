"""The look of the window: one stylesheet built on the palette, so light and dark themes both work.

Colours that carry meaning (fit verdicts, memory kinds) are fixed and saturated enough to read on
either background; everything else comes from ``palette(...)`` so the system theme shows through.
"""

from __future__ import annotations

from typing import cast

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication

# Fit verdicts (core/fit.py names) -> (background, label)
VERDICT_COLORS: dict[str, str] = {
    "full_gpu": "#1f9d55",
    "partial_gpu": "#d08700",
    "cpu": "#2f6fd6",
    "no_fit": "#d43c3c",
    "split": "#7b4fd6",  # fits only split over the RPC workers in Settings
    "unknown": "#7a7f87",
}

# Parts of a memory plan, in the order the stacked bar draws them.
MEMORY_COLORS: dict[str, str] = {
    "weights": "#4f7cff",
    "kv": "#17a2b8",
    "compute": "#f0a020",
    "output": "#b57edc",
    "margin": "#9aa3ad",
    "other": "#c0c6cc",
}

ACCENT = "#4f7cff"
WARNING = "#d08700"
ERROR = "#d43c3c"
SUCCESS = "#1f9d55"

STYLESHEET = f"""
QListWidget#sidebar {{
    border: none;
    background: palette(alternate-base);
    padding-top: 6px;
    outline: 0;
}}
QListWidget#sidebar::item {{
    padding: 9px 14px;
    margin: 2px 8px;
    border-radius: 6px;
}}
QListWidget#sidebar::item:selected {{
    background: {ACCENT};
    color: white;
}}
QListWidget#sidebar::item:hover:!selected {{
    background: palette(midlight);
}}
QLabel#brand {{
    font-size: 17px;
    font-weight: 600;
    padding: 14px 16px 6px 16px;
}}
QLabel#brandVersion {{
    color: palette(placeholder-text);
    padding: 0px 16px 8px 16px;
}}
QLabel#pageTitle {{
    font-size: 20px;
    font-weight: 600;
}}
QLabel#pageSubtitle, QLabel#muted {{
    color: palette(placeholder-text);
}}
QLabel#cardTitle {{
    font-size: 13px;
    font-weight: 600;
}}
QLabel#bigNumber {{
    font-size: 18px;
    font-weight: 600;
}}
QFrame#card {{
    background: palette(base);
    border: 1px solid palette(midlight);
    border-radius: 8px;
}}
QFrame#warning {{
    background: rgba(208, 135, 0, 0.12);
    border: 1px solid {WARNING};
    border-radius: 8px;
}}
QFrame#error {{
    background: rgba(212, 60, 60, 0.10);
    border: 1px solid {ERROR};
    border-radius: 8px;
}}
QLabel#chip {{
    background: palette(alternate-base);
    border: 1px solid palette(midlight);
    border-radius: 9px;
    padding: 1px 8px;
}}
QPushButton#primary {{
    background: {ACCENT};
    color: white;
    border: none;
    border-radius: 5px;
    padding: 5px 14px;
}}
QPushButton#primary:disabled {{
    background: palette(mid);
}}
QPushButton#rowButton {{
    margin: 3px 6px;
    padding: 2px 10px;
}}
QTableView {{
    gridline-color: palette(midlight);
}}
"""


class _PaletteWatcher(QObject):
    """Re-applies the stylesheet when the palette changes (light <-> dark).

    Qt resolves ``palette(...)`` in a stylesheet when it is set, so without this a theme switch
    would leave stale colours: dark backgrounds with black text.
    """

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if (
            event.type() == QEvent.Type.ApplicationPaletteChange
            and watched is QApplication.instance()
        ):
            app = QApplication.instance()
            assert isinstance(app, QApplication)
            app.setStyleSheet(app.styleSheet())
        return False


def apply_style(qapp: QApplication | None = None) -> None:
    """Install the stylesheet once per application (idempotent)."""
    qapp = qapp or cast("QApplication | None", QApplication.instance())
    if qapp is None or qapp.property("quantdesk_styled"):
        return
    qapp.setStyleSheet(qapp.styleSheet() + STYLESHEET)
    qapp.setProperty("quantdesk_styled", True)
    watcher = _PaletteWatcher(qapp)
    qapp.installEventFilter(watcher)


def color(name: str) -> QColor:
    """A named meaning colour (verdict or memory part) as a QColor; grey for unknown names."""
    return QColor(VERDICT_COLORS.get(name) or MEMORY_COLORS.get(name) or VERDICT_COLORS["unknown"])

"""The window's theme: light, dark or the system's, applied to the running QApplication.

Pages read the settings as ``context.settings`` (:class:`app.ui.context.AppContext`); the Settings
page changes them, saves them and emits ``context.events.settings_changed`` so other pages can
apply what concerns them.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette

_SCHEMES = {"light": Qt.ColorScheme.Light, "dark": Qt.ColorScheme.Dark}


def apply_theme(theme: str) -> None:
    """Light or dark on request; "system" hands the choice back to the operating system.

    Qt 6.8+ switches the platform's own scheme; where the platform cannot (some Linux desktops,
    the offscreen platform) an explicit palette does the job.
    """
    app = QGuiApplication.instance()
    if app is None:
        return
    wanted = _SCHEMES.get(theme, Qt.ColorScheme.Unknown)
    hints = QGuiApplication.styleHints()
    if hasattr(hints, "setColorScheme"):
        hints.setColorScheme(wanted)
    if wanted == Qt.ColorScheme.Unknown or hints.colorScheme() == wanted:
        QGuiApplication.setPalette(QPalette())  # the platform's own palette again
    else:
        QGuiApplication.setPalette(_dark_palette() if theme == "dark" else _light_palette())
    app.setProperty("quantdesk_theme", theme)


def _light_palette() -> QPalette:
    return QPalette(QColor("#f3f4f6"), QColor("#ffffff"))


def _dark_palette() -> QPalette:
    p = QPalette(QColor("#2b2d31"), QColor("#1e1f22"))
    roles = {
        QPalette.ColorRole.WindowText: "#e6e6e6",
        QPalette.ColorRole.Text: "#e6e6e6",
        QPalette.ColorRole.ButtonText: "#e6e6e6",
        QPalette.ColorRole.Button: "#3a3c42",
        QPalette.ColorRole.AlternateBase: "#26282c",
        QPalette.ColorRole.ToolTipBase: "#3a3c42",
        QPalette.ColorRole.ToolTipText: "#e6e6e6",
        QPalette.ColorRole.PlaceholderText: "#8a8d93",
        QPalette.ColorRole.Highlight: "#4f7cff",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: "#8ab4ff",
    }
    for role, color in roles.items():
        p.setColor(role, QColor(color))
    # setColor above sets every group, Disabled too: without this a disabled button or field
    # reads exactly like an enabled one on the dark background.
    disabled = {
        QPalette.ColorRole.WindowText: "#6b6e74",
        QPalette.ColorRole.Text: "#6b6e74",
        QPalette.ColorRole.ButtonText: "#6b6e74",
        QPalette.ColorRole.Button: "#2f3136",
        QPalette.ColorRole.Base: "#26282c",
        QPalette.ColorRole.HighlightedText: "#9a9da3",
        QPalette.ColorRole.Highlight: "#3a3c42",
    }
    for role, color in disabled.items():
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor(color))
    return p

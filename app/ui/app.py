"""Create the QApplication and show the main window."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import app

if TYPE_CHECKING:  # Qt is imported lazily: the CLI path must not pay for it
    from PySide6.QtWidgets import QApplication


def make_application(argv: list[str]) -> QApplication:
    """The one QApplication, with QuantDesk's names, icon and stylesheet."""
    from PySide6.QtWidgets import QApplication

    from app.ui.widgets.icon import app_icon
    from app.ui.widgets.style import apply_style

    qapp = QApplication.instance() or QApplication([sys.argv[0], *argv])
    assert isinstance(qapp, QApplication)
    qapp.setApplicationName(app.APP_NAME)
    qapp.setApplicationDisplayName(app.APP_NAME)
    qapp.setApplicationVersion(app.__version__)
    qapp.setOrganizationName(app.APP_NAME)
    qapp.setDesktopFileName("quantdesk")  # matches the .desktop entry from packaging/
    qapp.setWindowIcon(app_icon())
    apply_style(qapp)
    return qapp


def run_gui(argv: list[str]) -> int:
    from app.ui.main_window import MainWindow

    qapp = make_application(argv)
    window = MainWindow()
    window.show()
    quit_after = os.environ.get("QUANTDESK_QUIT_AFTER_MS")  # smoke tests of a built bundle
    if quit_after:
        from PySide6.QtCore import QTimer

        QTimer.singleShot(int(quit_after), window.close)  # closeEvent cleans up, as for a user
    return qapp.exec()

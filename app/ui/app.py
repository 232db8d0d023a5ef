"""Create the QApplication and show the main window."""

from __future__ import annotations

import sys

import app


def run_gui(argv: list[str]) -> int:
    from PySide6.QtWidgets import QApplication

    from app.ui.main_window import MainWindow

    qapp = QApplication.instance() or QApplication([sys.argv[0], *argv])
    qapp.setApplicationName(app.APP_NAME)
    qapp.setApplicationVersion(app.__version__)
    qapp.setOrganizationName(app.APP_NAME)
    window = MainWindow()
    window.show()
    return qapp.exec()

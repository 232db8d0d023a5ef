"""Fixtures shared by the GUI tests: shown main windows, closed (and shut down) afterwards."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QApplication

from app.ui.main_window import MainWindow


@pytest.fixture
def window(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


@pytest.fixture
def make_window(qtbot):
    """A factory of active main windows (for close-and-reopen tests); all are closed at the end."""
    windows: list[MainWindow] = []

    def make() -> MainWindow:
        win = MainWindow()
        qtbot.addWidget(win)
        win.show()
        qtbot.waitExposed(win)
        win.activateWindow()  # window shortcuts (Ctrl+N) need the active window
        qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=5000)
        windows.append(win)
        return win

    yield make
    for win in windows:
        win.close()

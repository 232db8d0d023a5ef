"""Fixtures shared by the GUI tests: a shown main window, closed (and shut down) afterwards."""

from __future__ import annotations

import pytest

from app.ui.main_window import MainWindow


@pytest.fixture
def window(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()

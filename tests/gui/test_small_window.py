"""Every page at 900x600 and 1920x1080: the window really takes that size, and the controls a
person needs read in full (buttons not cut, the Compare button whole, results reachable)."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QApplication, QPushButton, QScrollArea

from app.ui.main_window import PAGES

PAGES_HERE = [t for t, _ in PAGES]


@pytest.mark.parametrize("size", [(900, 600), (1920, 1080)])
def test_every_page_takes_the_window_size(window, qtbot, size):
    for title in PAGES_HERE:
        page = window.show_page(title)
        window.resize(*size)
        QApplication.processEvents()
        assert (window.width(), window.height()) == size, title
        for area in page.findChildren(QScrollArea):
            # A page wider than the window hides its right edge behind a scroll bar.
            assert not area.horizontalScrollBar().isVisible(), (title, area.widget())
        for button in page.findChildren(QPushButton):
            if button.isVisibleTo(page) and button.text():
                # A button narrower than its text shows "ompar" instead of "Compare".
                assert button.width() >= button.minimumSizeHint().width(), (title, button.text())


def test_compare_keeps_its_button_results_and_charts_reachable(window, qtbot):
    view = window.show_page("Compare")
    window.resize(900, 600)
    QApplication.processEvents()
    assert view.run_button.width() >= view.run_button.sizeHint().width()
    # The splitter with replies, results and chart keeps its height; the page scrolls instead.
    assert view.chart.height() >= view.chart.minimumHeight() >= 150
    assert view.table.parentWidget().height() > 60

"""The main window: sidebar navigation, lazily built pages, Ctrl+N, About, and the window icon."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

import app
from app.ui import main_window
from app.ui.about import AboutDialog, versions
from app.ui.main_window import PAGES, MainWindow


def test_window_has_title_icon_and_every_page(window):
    assert window.windowTitle() == app.APP_NAME
    assert not window.windowIcon().isNull()
    titles = [window.sidebar.item(i).text() for i in range(window.sidebar.count())]
    assert titles == [t for t, _ in PAGES]
    assert window.current_title() == "Hardware"


def test_pages_are_built_on_first_visit_and_kept(window):
    assert "Settings" not in window.pages
    first = window.show_page("Settings")
    assert window.stack.currentWidget() is first
    window.show_page("Hardware")
    assert window.show_page("Settings") is first


def test_missing_page_module_shows_placeholder(window, monkeypatch):
    monkeypatch.setattr(
        main_window, "PAGES", [*PAGES, ("Later", "app.ui.pages.does_not_exist:Nope")]
    )
    widget = window._build("app.ui.pages.does_not_exist:Nope", "Later")
    assert isinstance(widget, QLabel) and "coming soon" in widget.text()


def test_ctrl_n_routes_to_chat_page(window, qtbot):
    window.show_page("Hardware")
    qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert window.current_title() == "Chat"


def test_about_lists_versions_of_quantdesk_llama_cpp_and_qt(window, qtbot):
    from importlib import metadata

    info = versions()
    assert info["QuantDesk"] == app.__version__
    assert info["llama.cpp (llama-cpp-python)"] == metadata.version("llama-cpp-python")
    assert info["Qt"].count(".") == 2
    dialog = AboutDialog(window)
    qtbot.addWidget(dialog)
    assert dialog.version_labels["QuantDesk"].text() == app.__version__
    assert dialog.version_labels["Qt"].text() == info["Qt"]


def test_gui_process_never_imports_llama_cpp(tmp_path):
    # Other tests in this process quantize models with llama_cpp, so check in a fresh interpreter.
    code = textwrap.dedent(
        """
        import sys
        from PySide6.QtWidgets import QApplication
        from app.ui.app import make_application
        from app.ui.main_window import PAGES, MainWindow
        from app.ui.about import AboutDialog
        qapp = make_application([])
        win = MainWindow()
        win.show()
        for title, _ in PAGES:
            win.show_page(title)
            qapp.processEvents()
        AboutDialog(win)
        win.close()
        assert "llama_cpp" not in sys.modules, "the GUI process imported llama_cpp"
        print("OK")
        """
    )
    env = {"QT_QPA_PLATFORM": "offscreen", "QUANTDESK_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout


def test_switching_to_dark_theme_reaches_every_label(qtbot):
    # The stylesheet refers to palette colours; a theme switch while the window is open (the
    # Settings page does it) must re-resolve them, or text stays black on a dark background.
    from PySide6.QtGui import QPalette

    from app.ui.settings_service import apply_theme
    from app.ui.widgets.cards import PlainLabel

    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    try:
        page = win.show_page("Hardware")
        qtbot.waitUntil(lambda: page.profile is not None)
        [title] = [w for w in page.findChildren(PlainLabel) if w.objectName() == "pageTitle"]
        assert title.palette().color(QPalette.ColorRole.WindowText).lightness() < 100
        apply_theme("dark")
        qtbot.wait(50)
        text = title.palette().color(QPalette.ColorRole.WindowText)
        background = win.palette().color(QPalette.ColorRole.Window)
        assert background.lightness() < 100 and text.lightness() > 150
    finally:
        win.close()
        apply_theme("system")


def test_window_reopens_where_it_was(qtbot):
    first = MainWindow()
    qtbot.addWidget(first)
    first.show()
    first.resize(720, 520)  # inside the offscreen screen (800x600): no clamping
    qtbot.waitUntil(lambda: first.size().width() == 720)
    first.close()
    second = MainWindow()
    qtbot.addWidget(second)
    try:
        assert (second.width(), second.height()) == (720, 520)
    finally:
        second.close()

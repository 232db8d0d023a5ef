"""The main window: a sidebar of pages on the left, the current page on the right.

Pages are listed once in :data:`PAGES` as ``(title, "module:Class")`` and built lazily on first
visit; each page class takes ``(context: AppContext)``.  A page module that does not exist yet shows
a placeholder, so pages can land one at a time.
"""

from __future__ import annotations

import importlib
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QStackedWidget,
    QWidget,
)

import app
from app.ui.bridge import TaskRunner

PAGES: list[tuple[str, str]] = [
    ("Hardware", "app.ui.pages.hardware:HardwarePage"),
    ("Models", "app.ui.pages.models:ModelsPage"),
    ("Downloads", "app.ui.pages.downloads:DownloadsPage"),
    ("Library", "app.ui.pages.library:LibraryPage"),
    ("Chat", "app.ui.pages.chat:ChatPage"),
    ("Compare", "app.ui.compare_view:CompareView"),
    ("Settings", "app.ui.pages.settings:SettingsPage"),
]


class AppContext:
    """What every page shares: the task runner and the main window (for page-to-page navigation)."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        self.runner = TaskRunner(window)
        self.services: dict[str, Any] = {}  # shared objects pages create once (library, chats...)


class MainWindow(QMainWindow):
    """QuantDesk's main window."""

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle(app.APP_NAME)
        self.resize(1280, 800)
        self.context = AppContext(self)
        self.sidebar = QListWidget()
        self.sidebar.setFixedWidth(170)
        self.stack = QStackedWidget()
        self.pages: dict[str, QWidget] = {}
        for title, _ in PAGES:
            self.sidebar.addItem(title)
            self.stack.addWidget(QWidget())  # replaced on first visit
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.sidebar)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.sidebar.currentRowChanged.connect(self._on_page_selected)
        self.sidebar.setCurrentRow(0)

    def page(self, title: str) -> QWidget:
        """The page with this title, built now if it was not visited yet."""
        index = [t for t, _ in PAGES].index(title)
        if title not in self.pages:
            widget = self._build(PAGES[index][1], title)
            old = self.stack.widget(index)
            self.stack.removeWidget(old)
            old.deleteLater()
            self.stack.insertWidget(index, widget)
            self.pages[title] = widget
        return self.pages[title]

    def show_page(self, title: str) -> QWidget:
        index = [t for t, _ in PAGES].index(title)
        self.sidebar.setCurrentRow(index)
        return self.page(title)

    def _build(self, target: str, title: str) -> QWidget:
        module_name, cls_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            label = QLabel(f"{title} is coming soon.")
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            return label
        return getattr(module, cls_name)(self.context)

    def _on_page_selected(self, row: int) -> None:
        if row < 0:
            return
        self.page(PAGES[row][0])
        self.stack.setCurrentIndex(row)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        """Stop everything before the window goes: tasks, downloads, engine processes."""
        for widget in self.pages.values():
            shutdown = getattr(widget, "shutdown", None)
            if shutdown is not None:
                shutdown()
        self.context.runner.shutdown()
        for service in self.context.services.values():
            close = getattr(service, "close", None)
            if close is not None:
                close()
        super().closeEvent(event)

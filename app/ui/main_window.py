"""The main window: a sidebar of pages on the left, the current page on the right.

Pages are listed once in :data:`PAGES` as ``(title, "module:Class")`` and built lazily on first
visit; each page class takes ``(context: AppContext)``.  A page module that does not exist yet shows
a placeholder, so pages can land one at a time.  Optional page hooks, all duck-typed:
``page_shown()`` (each visit), ``new_chat()`` (Ctrl+N on the Chat page), ``shutdown()`` (window closes).
"""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path

from PySide6.QtCore import QByteArray, QSize, Qt
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QListWidget,
    QMainWindow,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

import app
from app.core import paths
from app.core.planning import Planner
from app.ui.context import AppContext
from app.ui.widgets.cards import PlainLabel
from app.ui.widgets.icon import app_icon
from app.ui.widgets.style import apply_style

PAGES: list[tuple[str, str]] = [
    ("Hardware", "app.ui.pages.hardware:HardwarePage"),
    ("Models", "app.ui.pages.models.page:ModelsPage"),
    ("Downloads", "app.ui.pages.downloads:DownloadsPage"),
    ("Library", "app.ui.pages.library:LibraryPage"),
    ("Chat", "app.ui.pages.chat.page:ChatPage"),
    ("Compare", "app.ui.pages.compare.page:CompareView"),
    ("Server", "app.ui.pages.server:ServerPage"),
    ("Settings", "app.ui.pages.settings:SettingsPage"),
]


class _PageStack(QStackedWidget):
    """Pages on top of each other, as small as the page on show allows.

    A plain QStackedWidget is as wide as its widest page's minimum, so one wide page would keep
    every page (and the window) from going down to 900 px.
    """

    def __init__(self) -> None:
        super().__init__()
        self.currentChanged.connect(lambda _i: self.updateGeometry())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        page = self.currentWidget()
        return page.minimumSizeHint() if page is not None else super().minimumSizeHint()


class MainWindow(QMainWindow):
    """QuantDesk's main window."""

    def __init__(self, planner: Planner | None = None) -> None:
        super().__init__()
        apply_style()
        self.setWindowTitle(f"{app.APP_NAME}")
        self.setWindowIcon(app_icon())
        self.resize(1280, 800)
        self.context = AppContext(self, self._page_of, planner)
        # Settings first: loading them applies the theme before any page is drawn.
        self.context.apply_settings()
        self.context.events.settings_changed.connect(self.context.apply_settings)
        self.context.events.badge_changed.connect(self.set_badge)
        self._closed = False
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.stack = _PageStack()
        self.pages: dict[str, QWidget] = {}
        for title, _ in PAGES:
            self.sidebar.addItem(title)
            self.stack.addWidget(QWidget())  # replaced on first visit
        self.setCentralWidget(self._layout())
        self._add_actions()
        self.sidebar.currentRowChanged.connect(self._on_page_selected)
        self.sidebar.setCurrentRow(0)
        self._restore_geometry()
        # Built now, not on first visit: it finds downloads paused in an earlier session and
        # flags them in the sidebar, or nothing would say they are waiting.
        self.page("Downloads")

    def _layout(self) -> QWidget:
        side = QWidget()
        side.setObjectName("sidePanel")
        side.setFixedWidth(190)
        column = QVBoxLayout(side)
        column.setContentsMargins(0, 0, 0, 8)
        column.setSpacing(0)
        column.addWidget(PlainLabel(app.APP_NAME, name="brand"))
        column.addWidget(PlainLabel(f"version {app.__version__}", name="brandVersion"))
        column.addWidget(self.sidebar, 1)
        self.about_button = QPushButton(f"About {app.APP_NAME}")
        self.about_button.setFlat(True)
        self.about_button.clicked.connect(self.show_about)
        column.addWidget(self.about_button)
        # The sidebar list's background is the panel's, so the brand blends into it.
        side.setStyleSheet("QWidget#sidePanel { background: palette(alternate-base); }")
        side.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(side)
        layout.addWidget(self.stack, 1)
        return central

    def _add_actions(self) -> None:
        new_chat = QAction("New chat", self)
        new_chat.setShortcut(QKeySequence.StandardKey.New)
        new_chat.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        new_chat.triggered.connect(self.new_chat)
        about = QAction(f"About {app.APP_NAME}", self)
        about.setShortcut(QKeySequence.StandardKey.HelpContents)
        about.triggered.connect(self.show_about)
        quit_action = QAction("Quit", self)
        # The platform's Quit key where it has one, and Ctrl+Q everywhere (Windows has none).
        quit_action.setShortcuts(
            [QKeySequence(QKeySequence.StandardKey.Quit), QKeySequence("Ctrl+Q")]
        )
        quit_action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        quit_action.triggered.connect(self.close)  # closeEvent pauses downloads, stops engines
        self.addActions([new_chat, about, quit_action])
        self.quit_action = quit_action
        self.new_chat_action = new_chat

    # --- navigation -------------------------------------------------------------------------

    def page(self, title: str) -> QWidget:
        """The page with this title, built now if it was not visited yet."""
        index = [t for t, _ in PAGES].index(title)
        if title not in self.pages:
            widget = self._build(PAGES[index][1], title)
            old = self.stack.widget(index)
            if old is not None:
                self.stack.removeWidget(old)
                old.deleteLater()
            self.stack.insertWidget(index, widget)
            self.pages[title] = widget
        return self.pages[title]

    def _page_of(self, cls: type[QWidget], show: bool) -> QWidget:
        """The page whose class is ``cls`` (for :class:`app.ui.context.Commands`)."""
        for title, target in PAGES:
            module_name, cls_name = target.split(":")
            if cls.__module__ == module_name and cls.__name__ == cls_name:
                return self.show_page(title) if show else self.page(title)
        raise KeyError(f"no page of class {cls.__name__}")

    def show_page(self, title: str) -> QWidget:
        index = [t for t, _ in PAGES].index(title)
        self.sidebar.setCurrentRow(index)
        return self.page(title)

    def set_badge(self, title: str, count: int) -> None:
        """Show a count next to a page's name in the sidebar (0 hides it; -1: "on", a service)."""
        index = [t for t, _ in PAGES].index(title)
        # -1: a service is on; -2: nothing runs but something waits (a paused download)
        special = {-1: "  \u25cf on", -2: "  · paused"}
        badge = f"  ({count})" if count > 0 else special.get(count, "")
        self.sidebar.item(index).setText(title + badge)

    def current_title(self) -> str:
        return PAGES[self.stack.currentIndex()][0]

    def _build(self, target: str, title: str) -> QWidget:
        module_name, cls_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            label = PlainLabel(f"{title} is coming soon.")
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            return label
        return getattr(module, cls_name)(self.context)

    def _on_page_selected(self, row: int) -> None:
        if row < 0:
            return
        widget = self.page(PAGES[row][0])
        self.stack.setCurrentIndex(row)
        shown = getattr(widget, "page_shown", None)
        if shown is not None:
            shown()

    def new_chat(self) -> None:
        """Ctrl+N: go to the Chat page and start a new conversation there."""
        self.context.commands.new_chat()

    def show_about(self) -> None:
        from app.ui.about import AboutDialog

        dialog = AboutDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()

    # --- geometry -----------------------------------------------------------------------------
    @staticmethod
    def _geometry_file() -> Path:
        return paths.config_dir() / "window.geometry"

    def _restore_geometry(self) -> None:
        """Where and how large the window was last time (a missing or bad file: the default)."""
        try:
            data = self._geometry_file().read_bytes()
        except OSError:
            return
        self.restoreGeometry(QByteArray(data))

    def _save_geometry(self) -> None:
        with contextlib.suppress(OSError):  # a lost window position is not worth an error message
            self._geometry_file().write_bytes(bytes(self.saveGeometry().data()))

    # --- shutdown ---------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop everything: page work, tasks, downloads, engine processes (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._save_geometry()
        for widget in self.pages.values():
            shutdown = getattr(widget, "shutdown", None)
            if shutdown is not None:
                shutdown()
        self.context.runner.shutdown()
        self.context.close()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        """Stop everything before the window goes: tasks, downloads, engine processes."""
        self.shutdown()
        super().closeEvent(event)

"""The application context every page gets: typed shared objects and typed page-to-page commands.

One :class:`AppContext` per window.  It holds what pages share -- the settings, the task runner, the
window-wide events, the core planner (which owns the hardware profile and the dry-run engine), the
library and the chat store -- and :class:`Commands`, the only way one page asks another to do
something ("compare these models", "start this download", "show this model in the library", "chat
with this model").  Pages never look each other up by title or probe them with ``getattr``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QWidget

from app.core.hardware import HardwareProfile
from app.core.library import Library
from app.core.planning import Planner, PlanOptions
from app.core.settings import Settings
from app.ui.bridge import TaskRunner

if TYPE_CHECKING:
    from app.core.chats import ChatStore
    from app.core.hub import Variant

P = TypeVar("P", bound=QWidget)


class AppEvents(QObject):
    """Window-wide events pages publish and observe, so pages need not know each other.

    Signals:
        library_changed(): a model entered or left the library (download done, import, delete).
        downloads_changed(): a transfer started, ended or changed state.
        settings_changed(): the user saved settings.
        hardware_changed(): the machine was detected again (free memory changed).
        badge_changed(str, int): a page's count for its sidebar entry (0 hides it).
    """

    library_changed = Signal()
    downloads_changed = Signal()
    settings_changed = Signal()
    hardware_changed = Signal()
    badge_changed = Signal(str, int)


class Commands:
    """Typed requests from one page to another; the window shows the target page first."""

    def __init__(self, page_of: Callable[[type[QWidget], bool], QWidget]) -> None:
        self._page_of = page_of

    def page(self, cls: type[P], show: bool = True) -> P:
        """The page of class ``cls`` (built on first use), brought to the front with ``show``."""
        page = self._page_of(cls, show)
        if not isinstance(page, cls):
            raise TypeError(f"the window has no page of class {cls.__name__}")
        return page

    def open_compare(self, paths: list[str | Path]) -> None:
        """Show Compare with these variants, ready to run."""
        from app.ui.pages.compare.page import CompareView

        self.page(CompareView).set_models(paths)

    def start_download(self, variant: Variant) -> None:
        """Queue a download on the Downloads page (which is not brought to the front)."""
        from app.ui.pages.downloads import DownloadsPage

        self.page(DownloadsPage, show=False).start_download(variant)

    def reveal_in_library(self, path: str | Path) -> None:
        """Show the Library with this model selected."""
        from app.ui.pages.library import LibraryPage

        self.page(LibraryPage).select(path)

    def chat_with(self, path: str | Path) -> None:
        """Show Chat with this model chosen and loading."""
        from app.ui.pages.chat.page import ChatPage

        self.page(ChatPage).open_model(path)

    def new_chat(self) -> None:
        """Show Chat with a new conversation started."""
        from app.ui.pages.chat.page import ChatPage

        self.page(ChatPage).new_chat()


class AppContext:
    """What every page shares (see the module docstring)."""

    def __init__(
        self,
        parent: QObject,
        page_of: Callable[[type[QWidget], bool], QWidget],
        planner: Planner | None = None,
    ) -> None:
        self.runner = TaskRunner(parent)
        self.events = AppEvents(parent)
        self.commands = Commands(page_of)
        # The window's planner is the process's: one dry-run engine, one header cache, one profile.
        self.planner: Planner = planner or Planner()
        self._lock = threading.RLock()
        self._settings: Settings | None = None
        self._chats: ChatStore | None = None

    @property
    def settings(self) -> Settings:
        """The window's settings, loaded on first use (which also applies the theme)."""
        with self._lock:
            if self._settings is None:
                from app.ui.settings_service import apply_theme

                self._settings = Settings.load()
                apply_theme(self._settings.theme)
            return self._settings

    def apply_settings(self) -> None:
        """Plans follow the memory settings in force (and loads follow the plans)."""
        self.planner.options = PlanOptions.from_settings(self.settings)

    def hardware(self, refresh: bool = False) -> HardwareProfile:
        """This machine's profile (detected on first use; call from a worker thread)."""
        return self.planner.profile(refresh)

    def library(self) -> Library:
        """The Library in the folder the settings name now (built per call: a folder changed in
        Settings applies at once; it is one small SQLite statement)."""
        return Library(folder=self.settings.library_path())

    @property
    def chats(self) -> ChatStore:
        with self._lock:
            if self._chats is None:
                from app.core.chats import ChatStore

                self._chats = ChatStore()
            return self._chats

    def close(self) -> None:
        """Release what the context owns: the chat store and the planner's engine child."""
        with self._lock:
            chats, self._chats = self._chats, None
        if chats is not None:
            chats.close()
        self.planner.close()

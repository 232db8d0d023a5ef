"""The Downloads page: every transfer with progress, speed, ETA and verification; pause, resume,
cancel, retry; unfinished downloads from earlier sessions reappear (paused) on start.

Each download runs ``app.core.download.download`` in a :class:`app.ui.bridge.Task`.  Pause and
window close stop it at the next chunk and keep the partial file (the core resumes from it, even
after a restart); Cancel also deletes the partial file.  A finished download emits
``context.events.library_changed``.
"""

from __future__ import annotations

from collections.abc import Iterator

from PySide6.QtCore import QObject, Qt, Slot
from PySide6.QtWidgets import QPushButton, QScrollArea, QVBoxLayout, QWidget

from app.core.cancel import CancelToken
from app.core.download import (
    DownloadProgress,
    PendingDownload,
    discard,
    download,
    pending_downloads,
)
from app.core.hub import Variant
from app.core.library import Library
from app.ui.bridge import Task
from app.ui.context import AppContext
from app.ui.pages.download_row import ACTIVE_STATES, DownloadRow
from app.ui.widgets.cards import PageHeader, PlainLabel

# Transfers at once: more only split the same bandwidth, and each holds a worker thread that chat
# replies and plans also need.
MAX_PARALLEL = 2


class DownloadItem(QObject):
    """The work behind one row: its task, its stop token, and what the user asked for."""

    def __init__(self, page: DownloadsPage, variant: Variant) -> None:
        super().__init__(page)
        self.page = page
        self.variant = variant
        self.row = DownloadRow(variant)
        self.task: Task | None = None
        self.stop: CancelToken | None = None
        self.forget = False  # Cancel: delete the partial file once the transfer has stopped
        self.last: DownloadProgress | None = None
        self.row.pause_clicked.connect(self.pause)
        self.row.resume_clicked.connect(self.start)
        self.row.retry_clicked.connect(self.start)
        self.row.cancel_clicked.connect(self.cancel)
        self.row.remove_clicked.connect(lambda: page.remove_item(self))
        self.row.open_clicked.connect(lambda: page.open_in_library(self))

    @property
    def key(self) -> tuple[str, str]:
        return (self.variant.repo_id, self.variant.file)

    @property
    def active(self) -> bool:
        return self.task is not None or self in self.page.queue

    def start(self) -> None:
        """Run now, or wait in the queue while MAX_PARALLEL downloads are running."""
        if self.active:
            return
        if self.page.running_count >= MAX_PARALLEL:
            self.page.queue.append(self)
            self.row.set_state("queued", f"Queued: {MAX_PARALLEL} downloads run at a time")
            self.page.update_badge()
            return
        self._run()

    def _run(self) -> None:
        self.forget = False
        self.stop = CancelToken()
        self.row.set_state("starting", "Starting…")
        variant, lib, stop = self.variant, self.page.library, self.stop

        def work(_token: CancelToken) -> Iterator[DownloadProgress]:
            yield from download(variant, lib, stop=stop)
            if stop.is_set() and self.forget:
                discard(variant, lib)

        task = Task(work, name=f"download {variant.file}")
        # Closing the window pauses (the partial file stays for next time); Cancel is explicit.
        task.on_cancel = stop.pause
        task.item_produced.connect(self._on_progress)
        task.finished.connect(self._on_finished)
        task.failed.connect(self._on_failed)
        self.task = task
        self.page.context.runner.start(task)
        self.page.update_badge()

    def pause(self) -> None:
        if self.stop is not None and self.task is not None:
            self.stop.pause()
            self.row.set_state("pausing", "Pausing…")

    def cancel(self) -> None:
        if self in self.page.queue:
            self.page.queue.remove(self)
        if self.task is not None and self.stop is not None:
            self.forget = True
            self.stop.cancel()
            self.row.set_state("pausing", "Cancelling…")
            return
        # Not running (paused or failed): forget the partial file off the GUI thread.
        variant, lib = self.variant, self.page.library
        self.page.context.runner.run(lambda _t: discard(variant, lib), name="discard")
        self.page.remove_item(self)

    @Slot(object)
    def _on_progress(self, progress: DownloadProgress) -> None:
        self.last = progress
        self.row.show_progress(progress)
        if progress.state == "done":
            self.page.context.events.library_changed.emit()

    @Slot()
    def _on_finished(self) -> None:
        self.task = None
        if self.forget:
            self.page.remove_item(self)
        elif self.row.state in ACTIVE_STATES:
            # Stopped without a final item (window closing): it is paused, not lost.
            self.row.show_paused(self.last.bytes_done if self.last else 0)
        self.page.update_badge()
        self.page.start_queued()

    @Slot(str, object)
    def _on_failed(self, message: str, exc: object) -> None:
        self.task = None
        self.row.show_error(message)
        self.page.update_badge()
        self.page.start_queued()


class DownloadsPage(QWidget):
    """All downloads of this and earlier sessions."""

    def __init__(self, context: AppContext) -> None:
        super().__init__()
        self.context = context
        self.items: list[DownloadItem] = []
        self.queue: list[DownloadItem] = []  # waiting for a free slot, oldest first
        outer = QVBoxLayout(self)
        outer.setContentsMargins(20, 16, 20, 16)
        header = PageHeader(
            "Downloads",
            "Every byte is checked against the publisher's SHA-256 as it arrives. Paused and "
            "interrupted downloads resume where they stopped, even after a restart.",
        )
        self.clear_button = header.add_action(QPushButton("Clear finished"))
        self.clear_button.clicked.connect(self.clear_finished)
        outer.addWidget(header)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        body = QWidget()
        self.rows = QVBoxLayout(body)
        self.rows.setContentsMargins(0, 0, 8, 0)
        self.rows.setSpacing(10)
        self.empty = PlainLabel("No downloads yet. Pick a model on the Models page.")
        self.empty.setObjectName("muted")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setMinimumHeight(240)
        self.rows.addWidget(self.empty)
        self.rows.addStretch(1)
        scroll.setWidget(body)
        outer.addWidget(scroll, 1)
        lib = self.library
        context.runner.run(
            lambda _t: pending_downloads(lib), name="pending-downloads", on_item=self._on_pending
        )

    @property
    def library(self) -> Library:
        return self.context.library()

    # --- public API (the Models page calls start_download) ------------------------------------
    def start_download(self, variant: Variant) -> DownloadItem:
        """Start (or resume) downloading ``variant``; one row per variant."""
        item = self.find_item(variant.repo_id, variant.file)
        if item is None:
            item = self._add(variant)
        if item.row.state == "done":
            return item
        item.start()
        return item

    def find_item(self, repo_id: str, file: str) -> DownloadItem | None:
        return next((i for i in self.items if i.key == (repo_id, file)), None)

    @property
    def running_count(self) -> int:
        return sum(1 for i in self.items if i.task is not None)

    def start_queued(self) -> None:
        """Start waiting downloads while fewer than MAX_PARALLEL run."""
        while self.queue and self.running_count < MAX_PARALLEL:
            self.queue.pop(0)._run()

    @property
    def active_count(self) -> int:
        return sum(1 for i in self.items if i.active)

    @property
    def busy(self) -> bool:
        return self.active_count > 0

    # --- rows ---------------------------------------------------------------------------------
    def _add(self, variant: Variant) -> DownloadItem:
        item = DownloadItem(self, variant)
        self.items.insert(0, item)
        self.rows.insertWidget(0, item.row)  # newest first
        self.empty.hide()
        return item

    @Slot(object)
    def _on_pending(self, pending: list[PendingDownload]) -> None:
        for p in pending:
            if self.find_item(p.variant.repo_id, p.variant.file) is None:
                self._add(p.variant).row.show_paused(p.bytes_done)
        self.update_badge()

    def remove_item(self, item: DownloadItem) -> None:
        if item.active:
            return
        self.items.remove(item)
        item.row.deleteLater()
        item.deleteLater()
        self.empty.setVisible(not self.items)
        self.update_badge()

    def clear_finished(self) -> None:
        for item in list(self.items):
            if item.row.state in ("done", "cancelled"):
                self.remove_item(item)

    def open_in_library(self, item: DownloadItem) -> None:
        if item.last is not None and item.last.model is not None:
            self.context.commands.reveal_in_library(item.last.model.path)

    @property
    def paused_count(self) -> int:
        return sum(1 for i in self.items if i.row.state == "paused" and not i.active)

    def update_badge(self) -> None:
        """The sidebar count of running downloads, or "paused" when only paused ones wait."""
        count = self.active_count or (-2 if self.paused_count else 0)
        self.context.events.badge_changed.emit("Downloads", count)
        self.context.events.downloads_changed.emit()

    def shutdown(self) -> None:
        """Window closing: pause every transfer (partial files stay; they resume next time)."""
        self.queue.clear()
        for item in self.items:
            if item.stop is not None and item.task is not None:
                item.stop.pause()

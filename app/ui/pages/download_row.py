"""One transfer on the Downloads page: name, progress bar, speed and ETA, state, and its buttons.

The row only shows; :class:`app.ui.pages.downloads.DownloadsPage` owns the work.  Its buttons
become signals.

Signals:
    pause_clicked(), resume_clicked(), cancel_clicked(), retry_clicked(), remove_clicked(),
    open_clicked()
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QMenu, QProgressBar, QPushButton, QWidget

from app.core.download import DownloadProgress
from app.core.hub import Variant
from app.ui.widgets.cards import Card, PlainLabel, chip, muted, plain_tooltip
from app.ui.widgets.format import human_bytes, human_duration, human_speed
from app.ui.widgets.reveal import copy_text
from app.ui.widgets.style import ACCENT, ERROR, SUCCESS

# state -> buttons shown
_BUTTONS: dict[str, tuple[str, ...]] = {
    "queued": ("cancel",),
    "starting": ("pause", "cancel"),
    "resuming": ("pause", "cancel"),
    "downloading": ("pause", "cancel"),
    "retrying": ("pause", "cancel"),
    "verifying": (),
    "pausing": (),
    "paused": ("resume", "cancel"),
    "cancelled": ("retry", "remove"),
    "failed": ("retry", "cancel"),
    "done": ("open", "remove"),
}
ACTIVE_STATES = {
    "queued",
    "starting",
    "resuming",
    "downloading",
    "retrying",
    "verifying",
    "pausing",
}


class DownloadRow(Card):
    """The view of one download."""

    pause_clicked = Signal()
    resume_clicked = Signal()
    cancel_clicked = Signal()
    retry_clicked = Signal()
    remove_clicked = Signal()
    open_clicked = Signal()

    def __init__(self, variant: Variant, parent: QWidget | None = None) -> None:
        super().__init__("", parent)
        self.variant = variant
        self.state = "queued"
        head = QHBoxLayout()
        title = PlainLabel(variant.file, name="cardTitle")
        title.setToolTip(plain_tooltip(f"{variant.repo_id} @ {variant.commit[:12]}"))
        head.addWidget(title)
        head.addWidget(chip(variant.quant))
        if variant.shards > 1:
            head.addWidget(chip(f"{variant.shards} files"))
        head.addStretch(1)
        self.buttons: dict[str, QPushButton] = {}
        for key, label, signal in (
            ("pause", "Pause", self.pause_clicked),
            ("resume", "Resume", self.resume_clicked),
            ("retry", "Retry", self.retry_clicked),
            ("open", "Show in Library", self.open_clicked),
            ("cancel", "Cancel", self.cancel_clicked),
            ("remove", "Remove", self.remove_clicked),
        ):
            button = QPushButton(label)
            button.clicked.connect(signal.emit)
            head.addWidget(button)
            self.buttons[key] = button
        self.add(head)
        self.repo = muted(variant.repo_id, wrap=False)
        self.add(self.repo)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(8)
        self.add(self.bar)
        self.status = PlainLabel("")
        self.status.setWordWrap(True)
        self.add(self.status)
        self.set_state("queued", "Waiting to start…")
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(
            lambda pos: self.context_menu().exec(self.mapToGlobal(pos))
        )

    def context_menu(self) -> QMenu:
        """Right-click: the row's visible buttons, plus copying the file name and its Hub repo."""
        menu = QMenu(self)
        for button in self.buttons.values():
            if not button.isHidden():
                menu.addAction(button.text(), button.click)
        menu.addSeparator()
        menu.addAction("Copy file name", lambda: copy_text(self.variant.file))
        menu.addAction("Copy repo", lambda: copy_text(self.variant.repo_id))
        return menu

    def set_state(self, state: str, text: str) -> None:
        self.state = state
        self.status.setText(text)
        color = {"failed": ERROR, "done": SUCCESS}.get(state)
        self.status.setStyleSheet(f"color: {color};" if color else "")
        chunk = {"failed": ERROR, "done": SUCCESS, "paused": "#9aa3ad", "cancelled": "#9aa3ad"}
        self.bar.setStyleSheet(
            "QProgressBar { border: none; border-radius: 4px; background: palette(midlight); }"
            f"QProgressBar::chunk {{ border-radius: 4px; background: {chunk.get(state, ACCENT)}; }}"
        )
        shown = _BUTTONS.get(state, ())
        for key, button in self.buttons.items():
            button.setVisible(key in shown)
        if state == "verifying":
            self.bar.setRange(0, 0)  # busy: hashing finishes, headers are checked
        else:
            self.bar.setRange(0, 1000)
        if state == "done":
            self.bar.setValue(1000)

    def show_progress(self, p: DownloadProgress) -> None:
        """Apply one progress item from the worker."""
        if p.bytes_total:
            self.bar.setValue(int(1000 * p.bytes_done / p.bytes_total))
        done = f"{human_bytes(p.bytes_done)} of {human_bytes(p.bytes_total)}"
        shard = f" · file {p.shard} of {p.shards}" if p.shards > 1 else ""
        if p.state == "downloading":
            text = f"{done} · {human_speed(p.speed_bps)} · {human_duration(p.eta_s)} left{shard}"
        elif p.state == "resuming":
            text = f"Checking the part already downloaded… {done}"
        elif p.state == "retrying":
            text = f"{done} · connection problem: {p.message}"
        elif p.state == "verifying":
            text = "Verifying: SHA-256 matched, checking the GGUF header…"
        elif p.state == "done":
            text = f"Done · {human_bytes(p.bytes_total)} verified (SHA-256) and in your library"
        elif p.state == "paused":
            text = f"Paused at {done} · resumes where it stopped"
        elif p.state == "cancelled":
            text = f"Cancelled at {done}"
        else:
            text = p.message or p.state.capitalize() + "…"
        self.set_state(p.state, text)

    def show_paused(self, bytes_done: int) -> None:
        total = self.variant.size_bytes
        if total:
            self.bar.setValue(int(1000 * bytes_done / total))
        self.set_state(
            "paused",
            f"Paused at {human_bytes(bytes_done)} of {human_bytes(total)} · resumes where it stopped",
        )

    def show_error(self, message: str) -> None:
        self.set_state("failed", f"Failed: {message}")

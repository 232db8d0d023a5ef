"""The conversation view: one widget per message in a scroll area, and a streaming reply.

Streaming must cost the same per token at token 4000 as at token 1, so a growing reply is never
re-rendered whole.  Each assistant message has two text areas stacked with no gap:

- the *stable* part, append-only: once a paragraph or code block is finished (a blank line outside
  a code fence, :func:`app.ui.markdown.split_stable`) it is rendered once and appended;
- the *tail*: the unfinished last block, re-rendered from markdown at most every 50 ms (longer when
  a render itself gets slow, so the event loop never stalls on it).  A block that grows past
  ``TAIL_LIMIT`` characters without ending (a wall of text, a huge code block) is cut at a line
  break or space (:func:`app.ui.markdown.force_split`), so a render never grows with the reply.

Tokens only append to a list; the throttled render does the work.  Other messages are never
touched while a reply streams.  Model text goes through the sanitizing renderer (no live HTML);
links are never followed by the view itself.
"""

from __future__ import annotations

import html
import time

from PySide6.QtCore import QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QGuiApplication, QResizeEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.ui.markdown import force_split, render, split_stable

MIN_RENDER_INTERVAL_MS = 50
MAX_RENDER_INTERVAL_MS = 250
SHOWN_AT_ONCE = 40  # messages built when a conversation opens (more on request)
TAIL_LIMIT = 600  # characters of an unfinished block re-rendered at most (see force_split)
_ROLE_NAMES = {"user": "You", "assistant": "Assistant", "error": "Error", "system": "System"}


class _Body(QTextBrowser):
    """A read-only text area as tall as its content (the scroll area scrolls, not each message)."""

    link_activated = Signal(QUrl)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.viewport().setAutoFillBackground(False)
        self.setStyleSheet("QTextBrowser { background: transparent; }")
        self.document().setDocumentMargin(2)
        self.document().documentLayout().documentSizeChanged.connect(self._fit_height)
        self.anchorClicked.connect(self.link_activated)
        self.setFixedHeight(0)

    # Every change of content refits the height itself: documentSizeChanged alone is not enough,
    # because an empty document is already one line tall, so a first line of text leaves its size
    # unchanged and no signal comes -- the body stayed 0 px high and one-line replies vanished
    # (issue 12).
    def show_html(self, text: str) -> None:
        self.setHtml(text)
        self._fit_height()

    def show_plain(self, text: str) -> None:
        self.setPlainText(text)
        self._fit_height()

    def append_html(self, text: str) -> None:
        self.append(text)
        self._fit_height()

    def append_plain(self, text: str) -> None:
        """Add text at the end without a new paragraph (reasoning streams in this way)."""
        cursor = self.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(text)
        self._fit_height()

    def clear_text(self) -> None:
        self.clear()
        self._fit_height()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._fit_height()

    def _fit_height(self, size: object = None) -> None:
        doc = self.document()
        height = 0 if doc.isEmpty() else int(doc.size().height() + 0.999)
        if height != self.height():
            self.setFixedHeight(height)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(200, self.height())


class MessageWidget(QFrame):
    """One message: who wrote it, its text, its reply stats, and actions (copy, edit, regenerate).

    Signals:
        copy_requested(): the user pressed Copy (the view copies the text).
        edit_requested(int): Edit on this (user) message; the message id.
        regenerate_requested(int): Regenerate on this (assistant) message; the message id.
    """

    edit_requested = Signal(int)
    regenerate_requested = Signal(int)

    def __init__(self, role: str, message_id: int | None = None) -> None:
        super().__init__()
        self.role = role
        self.message_id = message_id
        self.setObjectName(f"message_{role}")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self._pieces: list[str] = []
        self._tail = ""  # text not yet committed to the stable part
        self._text = ""
        self.streaming = False
        self.render_count = 0

        self.title = QLabel(_ROLE_NAMES.get(role, role))
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.title.setStyleSheet("font-weight: bold;")
        self.stats_label = QLabel("")
        self.stats_label.setTextFormat(Qt.TextFormat.PlainText)
        self.stats_label.setStyleSheet("color: gray;")
        self.stats_label.setWordWrap(True)  # never wider than the view
        self.stable = _Body()
        self.tail = _Body()
        self.copy_button = self._tool("Copy", "Copy this message")
        self.edit_button = self._tool("Edit", "Edit this message and send it again")
        self.regenerate_button = self._tool("Regenerate", "Write this reply again")
        self.copy_button.clicked.connect(self.copy_text)
        self.edit_button.clicked.connect(lambda: self.edit_requested.emit(self.message_id or 0))
        self.regenerate_button.clicked.connect(
            lambda: self.regenerate_requested.emit(self.message_id or 0)
        )
        self.edit_button.hide()
        self.regenerate_button.hide()

        head = QHBoxLayout()
        head.setContentsMargins(0, 0, 0, 0)
        head.setSpacing(10)
        head.addWidget(self.title)
        head.addWidget(self.stats_label, 1)
        for button in (self.copy_button, self.edit_button, self.regenerate_button):
            head.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.setSpacing(0)
        layout.addLayout(head)
        layout.addWidget(self.stable)
        layout.addWidget(self.tail)
        if role == "user":
            self.setStyleSheet(
                "#message_user { background: rgba(79,124,255,0.10); border-radius: 8px; }"
            )
        elif role == "error":
            self.setStyleSheet(
                "#message_error { background: rgba(212,60,60,0.14); border-radius: 8px; }"
            )

    def _tool(self, text: str, tip: str) -> QToolButton:
        button = QToolButton()
        button.setText(text)
        button.setToolTip(tip)
        button.setAutoRaise(True)
        return button

    # ---- content ------------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The whole message text (joined once when asked for, never per token)."""
        if self._pieces:
            self._text += "".join(self._pieces)
            self._pieces.clear()
        return self._text

    def set_text(self, text: str) -> None:
        """Show finished text: markdown for the assistant, plain text for the others."""
        self._pieces.clear()
        self._text = text
        self._tail = ""
        self.tail.clear_text()
        if self.role == "assistant":
            self.stable.show_html(render(text))
        else:
            self.stable.show_plain(text)
        self.render_count += 1

    def set_stats(self, words: str) -> None:
        self.stats_label.setText(words)

    def copy_text(self) -> None:
        QGuiApplication.clipboard().setText(self.text)

    # ---- streaming ----------------------------------------------------------------------
    def begin_stream(self) -> None:
        self.streaming = True
        self._pieces.clear()
        self._text = self._tail = ""
        self.stable.clear_text()
        self.tail.clear_text()

    def append(self, piece: str) -> None:
        self._pieces.append(piece)

    def render_pending(self) -> None:
        """Commit finished blocks to the stable part and re-render the unfinished tail."""
        if not self._pieces:
            return
        new = "".join(self._pieces)
        self._pieces.clear()
        self._text += new
        tail = self._tail + new
        cut = split_stable(tail)
        if cut:
            self.stable.append_html(render(tail[:cut]))
            tail = tail[cut:]
        if len(tail) > TAIL_LIMIT:
            done, tail = force_split(tail)
            if done:
                self.stable.append_html(render(done))
        self._tail = tail
        self.tail.show_html(render(tail) if tail.strip() else "")
        self.render_count += 1

    def end_stream(self, final_text: str | None = None) -> None:
        self.render_pending()
        self.streaming = False
        if final_text is not None and final_text != self._text:
            self.set_text(final_text)


class ChatView(QScrollArea):
    """All messages of one conversation; the last one may be streaming.

    Signals:
        edit_requested(int): the user wants to edit and resend this user message (its id).
        regenerate_requested(int): the user wants this assistant reply written again (its id).
        link_activated(QUrl): a link in a message was clicked (never opened by the view).
        rendered(): a streaming render happened (tests and the benchmark watch it).
    """

    edit_requested = Signal(int)
    regenerate_requested = Signal(int)
    link_activated = Signal(QUrl)
    rendered = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        self._column = QVBoxLayout(inner)
        self._column.setContentsMargins(12, 12, 12, 12)
        self._column.setSpacing(8)
        self.earlier_button = QPushButton("Show earlier messages")
        self.earlier_button.setFlat(True)
        self.earlier_button.clicked.connect(self.show_earlier)
        self.earlier_button.hide()
        self._column.addWidget(self.earlier_button)
        self._column.addStretch(1)
        self._hidden: list[tuple[str, str, int | None, str]] = []
        self.setWidget(inner)
        self.messages: list[MessageWidget] = []
        self._streaming: MessageWidget | None = None
        self._interval_ms = MIN_RENDER_INTERVAL_MS
        self._last_render = 0.0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._render_now)
        self._stick = True
        bar = self.verticalScrollBar()
        bar.valueChanged.connect(self._on_scrolled)
        bar.rangeChanged.connect(self._on_range_changed)
        self._busy = False

    # ---- messages -----------------------------------------------------------------------
    def clear(self) -> None:
        self._timer.stop()
        self._streaming = None
        self._discard(self.messages)
        self.messages.clear()
        self._hidden = []
        self._show_earlier_button()
        self._stick = True

    def add_message(
        self, role: str, text: str, message_id: int | None = None, stats: str = ""
    ) -> MessageWidget:
        widget = self._build(role, text, message_id, stats)
        self._insert(widget)
        return widget

    def set_messages(self, messages: list[tuple[str, str, int | None, str]]) -> None:
        """Show a conversation: (role, text, message id, stats in words) per message.

        Only the last :data:`SHOWN_AT_ONCE` are built; "Show earlier messages" builds more, so
        opening a long conversation costs the same as a short one.
        """
        self.clear()
        self._hidden = list(messages[:-SHOWN_AT_ONCE]) if len(messages) > SHOWN_AT_ONCE else []
        for role, text, message_id, stats in messages[len(self._hidden) :]:
            self._insert(self._build(role, text, message_id, stats), update=False)
        self._show_earlier_button()
        self._update_actions()

    def show_earlier(self) -> None:
        """Build the previous :data:`SHOWN_AT_ONCE` messages above the ones shown."""
        batch = self._hidden[-SHOWN_AT_ONCE:]
        del self._hidden[-SHOWN_AT_ONCE:]
        widgets = [self._build(*m) for m in batch]
        for offset, widget in enumerate(widgets):
            self._connect(widget)
            self._column.insertWidget(1 + offset, widget)
        self.messages[:0] = widgets
        self._show_earlier_button()
        self._update_actions()

    def _show_earlier_button(self) -> None:
        count = len(self._hidden)
        self.earlier_button.setVisible(count > 0)
        self.earlier_button.setText(f"Show earlier messages ({count} more)")

    def _build(self, role: str, text: str, message_id: int | None, stats: str) -> MessageWidget:
        widget = MessageWidget(role, message_id)
        widget.set_text(text)
        widget.set_stats(stats)
        return widget

    def _connect(self, widget: MessageWidget) -> None:
        widget.edit_requested.connect(self.edit_requested)
        widget.regenerate_requested.connect(self.regenerate_requested)
        widget.stable.link_activated.connect(self.link_activated)
        widget.tail.link_activated.connect(self.link_activated)

    def _insert(self, widget: MessageWidget, update: bool = True) -> None:
        self._connect(widget)
        self._column.insertWidget(self._column.count() - 1, widget)
        self.messages.append(widget)
        if update:
            self._update_actions()

    def remove_from(self, index: int) -> None:
        """Drop the message at ``index`` and every later one (regenerate, edit-and-resend)."""
        self._discard(self.messages[index:])
        del self.messages[index:]
        self._update_actions()

    def _discard(self, widgets: list[MessageWidget]) -> None:
        # Hidden and unparented now: a deferred delete alone would leave them painted until the
        # event loop gets back to its top level.
        for widget in widgets:
            self._column.removeWidget(widget)
            widget.hide()
            widget.setParent(None)
            widget.deleteLater()

    def set_busy(self, busy: bool) -> None:
        """While a reply runs, hide the edit/regenerate actions."""
        self._busy = busy
        self._update_actions()

    def _update_actions(self) -> None:
        last_user = max((i for i, m in enumerate(self.messages) if m.role == "user"), default=-1)
        last = len(self.messages) - 1
        for i, widget in enumerate(self.messages):
            can_act = not self._busy and widget.message_id is not None
            widget.edit_button.setVisible(can_act and i == last_user)
            widget.regenerate_button.setVisible(
                can_act and i == last and widget.role in ("assistant", "error") and last_user >= 0
            )

    # ---- streaming ----------------------------------------------------------------------
    def begin_stream(self, message_id: int | None = None) -> MessageWidget:
        widget = MessageWidget("assistant", message_id)
        widget.begin_stream()
        self._insert(widget)
        self._streaming = widget
        self._interval_ms = MIN_RENDER_INTERVAL_MS
        self._last_render = 0.0
        self._stick = True
        return widget

    def append_token(self, piece: str) -> None:
        """Add a piece of the streaming reply; rendering follows within the throttle interval."""
        widget = self._streaming
        if widget is None:
            return
        widget.append(piece)
        if self._timer.isActive():
            return
        since = (time.perf_counter() - self._last_render) * 1000
        if since >= self._interval_ms:
            self._render_now()
        else:
            self._timer.start(int(self._interval_ms - since) + 1)

    def _render_now(self) -> None:
        widget = self._streaming
        if widget is None:
            return
        start = time.perf_counter()
        widget.render_pending()
        took = (time.perf_counter() - start) * 1000
        self._last_render = time.perf_counter()
        # A render that got slow (a huge unfinished block) spaces the next one out.
        self._interval_ms = min(MAX_RENDER_INTERVAL_MS, max(MIN_RENDER_INTERVAL_MS, 4 * took))
        self.rendered.emit()

    def end_stream(self, final_text: str | None = None, stats: str = "") -> MessageWidget | None:
        widget = self._streaming
        if widget is None:
            return None
        self._timer.stop()
        widget.end_stream(final_text)
        widget.set_stats(stats)
        self._streaming = None
        self._update_actions()
        self.rendered.emit()
        return widget

    @property
    def streaming(self) -> MessageWidget | None:
        return self._streaming

    # ---- scrolling ----------------------------------------------------------------------
    def _on_scrolled(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._stick = value >= bar.maximum() - 8

    def _on_range_changed(self, _low: int, high: int) -> None:
        if self._stick:
            self.verticalScrollBar().setValue(high)


def error_html(text: str) -> str:
    """An error message as escaped text (engine messages may quote model or file content)."""
    return html.escape(text).replace("\n", "<br>")

"""The conversation view: one widget per message in a scroll area, and a streaming reply.

Streaming must cost the same per token at token 4000 as at token 1, so a growing reply is never
re-rendered whole.  Each assistant message has two text areas stacked with no gap:

- the *stable* part, append-only: once a paragraph or code block is finished (a blank line outside
  a code fence, :func:`app.ui.markdown.split_stable`) it is rendered once and appended;
- the *tail*: the unfinished last block, re-rendered from markdown at most every 50 ms (longer when
  a render itself gets slow, so the event loop never stalls on it).  A block that grows past
  ``TAIL_LIMIT`` characters without ending (a wall of text, a huge code block) is cut at a line
  break or space (:func:`app.ui.markdown.force_split`), so a render never grows with the reply.

A reply's ``<think>`` part (reasoning models) streams into a collapsible plain-text block above the
answer (:class:`app.core.chat_format.ReasoningSplitter` routes the pieces).  A message with alternatives
(regenerated replies, edited messages: siblings in the store's tree) shows ``< 2/3 >`` to switch.

Tokens only append to a list; the throttled render does the work.  Other messages are never
touched while a reply streams.  Model text goes through the sanitizing renderer (no live HTML);
links are never followed by the view itself.  A right-click on a message offers copying it (as
shown or as Markdown), Edit or Regenerate, and Delete.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from PySide6.QtCore import QPoint, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QContextMenuEvent, QGuiApplication, QResizeEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.chat_format import CLOSE as THINK_CLOSE
from app.core.chat_format import ReasoningSplitter
from app.core.chats import split_reasoning
from app.ui.dialogs import confirm
from app.ui.markdown import force_split, render, split_stable
from app.ui.widgets.cards import plain_tooltip

MIN_RENDER_INTERVAL_MS = 50
MAX_RENDER_INTERVAL_MS = 250
SHOWN_AT_ONCE = 40  # messages built when a conversation opens (more on request)
RETHINK_LIMIT = 64_000  # characters of a reply kept to re-read it when a lone </think> comes
TAIL_LIMIT = 600  # characters of an unfinished block re-rendered at most (see force_split)
_ROLE_NAMES = {"user": "You", "assistant": "Assistant", "error": "Error", "system": "System"}


@dataclass
class Shown:
    """A message as the view shows it; ``alternatives`` are its siblings' ids (itself included)."""

    role: str
    text: str
    message_id: int | None = None
    stats: str = ""
    reasoning: str = ""
    alternatives: list[int] = field(default_factory=list)
    reasoning_tokens: int = 0


def _shown(item: Shown | Sequence[object]) -> Shown:
    return item if isinstance(item, Shown) else Shown(*item)  # type: ignore[arg-type]


class ElidedLabel(QLabel):
    """One line of plain text, elided with "…" to the width it gets; the whole text in the tooltip.

    A word-wrapped label beside other widgets in a narrow window became a column of one word per
    line (issue 16); this one keeps its height and gives up width instead.
    """

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._full = ""
        self.setText(text)

    def text(self) -> str:  # the whole text, not what fits
        return self._full

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        self._full = text
        self.setToolTip(plain_tooltip(text) if text else "")
        self._elide()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(40, super().minimumSizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(
            self._full, Qt.TextElideMode.ElideRight, max(0, self.contentsRect().width())
        )
        super().setText(shown)


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

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:  # noqa: N802 - Qt's name
        # The message's own menu (copy, edit, regenerate, delete) instead of the text area's.
        event.ignore()

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
        edit_requested(int): Edit on this (user) message; the message id.
        regenerate_requested(int): Regenerate on this (assistant) message; the message id.
        switch_requested(int): ``<`` or ``>``: show this alternative instead (its message id).
    """

    edit_requested = Signal(int)
    regenerate_requested = Signal(int)
    switch_requested = Signal(int)
    menu_requested = Signal(QPoint)  # a right-click anywhere on the message (global position)

    def __init__(self, role: str, message_id: int | None = None) -> None:
        super().__init__()
        self.role = role
        self.message_id = message_id
        self.setObjectName(f"message_{role}")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self._pieces: list[str] = []
        self._tail = ""  # text not yet committed to the stable part
        self._text = ""
        self._think_pieces: list[str] = []
        self._reasoning = ""
        self._splitter = ReasoningSplitter()
        self._think_touched = False  # the user opened or closed the block: leave it so
        self.alternatives: list[int] = []
        self.reasoning_tokens = 0  # streamed pieces inside the block (the page may set the count)
        self.streaming = False
        self.render_count = 0

        self.title = QLabel(_ROLE_NAMES.get(role, role))
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.title.setStyleSheet("font-weight: bold;")
        self.stats_label = ElidedLabel("")  # one line, never wider than the view
        self.stats_label.setStyleSheet("color: gray;")
        self.stable = _Body()
        self.tail = _Body()
        self.think_button = QToolButton()
        self.think_button.setCheckable(True)
        self.think_button.setAutoRaise(True)
        self.think_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.think_button.setArrowType(Qt.ArrowType.RightArrow)
        self.think_button.setText("Thinking")
        self.think_button.setToolTip("Show or hide the model's reasoning (never sent back to it)")
        self.think_button.toggled.connect(self._on_think_toggled)
        self.think_button.clicked.connect(self._on_think_clicked)
        self.think_button.hide()
        self.reasoning_body = _Body()
        self.reasoning_body.setObjectName("reasoning")
        self.reasoning_body.setStyleSheet(
            "QTextBrowser { background: transparent; color: gray; font-style: italic; }"
        )
        self.reasoning_body.hide()
        self.prev_button = self._tool("<", "The previous alternative")
        self.next_button = self._tool(">", "The next alternative")
        self.alt_label = QLabel("")
        self.alt_label.setTextFormat(Qt.TextFormat.PlainText)
        self.alt_label.setStyleSheet("color: gray;")
        self.prev_button.clicked.connect(lambda: self._switch(-1))
        self.next_button.clicked.connect(lambda: self._switch(1))
        for w in (self.prev_button, self.alt_label, self.next_button):
            w.hide()
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
        for w in (self.prev_button, self.alt_label, self.next_button):
            head.addWidget(w)
        for button in (self.copy_button, self.edit_button, self.regenerate_button):
            head.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.setSpacing(0)
        layout.addLayout(head)
        layout.addWidget(self.think_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.reasoning_body)
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

    # ---- alternatives ---------------------------------------------------------------------
    def set_alternatives(self, ids: list[int]) -> None:
        """Show ``< i/n >`` when this message has siblings (``ids``: all of them, oldest first)."""
        self.alternatives = list(ids)
        many = len(ids) > 1 and self.message_id in ids
        for w in (self.prev_button, self.alt_label, self.next_button):
            w.setVisible(many)
        if many and self.message_id is not None:
            at = ids.index(self.message_id)
            self.alt_label.setText(f"{at + 1}/{len(ids)}")
            self.prev_button.setEnabled(at > 0)
            self.next_button.setEnabled(at < len(ids) - 1)

    def _switch(self, step: int) -> None:
        if self.message_id is None or self.message_id not in self.alternatives:
            return
        at = self.alternatives.index(self.message_id) + step
        if 0 <= at < len(self.alternatives):
            self.switch_requested.emit(self.alternatives[at])

    def set_actions_enabled(self, enabled: bool) -> None:
        for w in (self.prev_button, self.next_button):
            w.setEnabled(enabled and w.isEnabled())
        if enabled:
            self.set_alternatives(self.alternatives)

    # ---- reasoning ----------------------------------------------------------------------
    @property
    def reasoning(self) -> str:
        # Not consumed here: pieces still waiting must reach the next render.
        return self._reasoning + "".join(self._think_pieces)

    def set_reasoning(self, text: str) -> None:
        """Show a finished reply's reasoning, folded (the button opens it)."""
        self._think_pieces.clear()
        self._reasoning = text.strip()
        self.reasoning_body.show_plain(self._reasoning)
        self.think_button.setVisible(bool(self._reasoning))
        if not self._think_touched:
            self.think_button.setChecked(False)
        self._on_think_toggled(self.think_button.isChecked())

    def _on_think_toggled(self, shown: bool) -> None:
        self.think_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
        self.reasoning_body.setVisible(shown and bool(self.reasoning))

    def _on_think_clicked(self) -> None:
        self._think_touched = True

    # ---- content ------------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The whole message text (joined when asked for, never per token).

        Pieces still waiting for a render are not consumed: reading the text mid-stream once took
        them away from the render, and they never appeared.
        """
        return self._text + "".join(self._pieces)

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

    def plain_text(self) -> str:
        """The text as it reads on screen (a reply's markdown rendered, marks gone)."""
        if self.role != "assistant":
            return self.text
        parts = (self.stable.toPlainText(), self.tail.toPlainText())
        return "\n".join(p for p in parts if p.strip()).strip()

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:  # noqa: N802 - Qt's name
        self.menu_requested.emit(event.globalPos())

    # ---- streaming ----------------------------------------------------------------------
    def begin_stream(self, in_reasoning: bool = False) -> None:
        self.streaming = True
        self._pieces.clear()
        self._think_pieces.clear()
        self._splitter = ReasoningSplitter(in_reasoning)
        self._text = self._tail = self._reasoning = ""
        self.stable.clear_text()
        self.tail.clear_text()
        self.reasoning_body.clear_text()
        self.think_button.hide()
        self.reasoning_body.hide()
        self.reasoning_tokens = 0
        self._raw: list[str] | None = []  # the reply so far, until it is known to think or not
        self._raw_chars = 0
        self._raw_tokens = 0

    def append(self, piece: str) -> None:
        raw = self._raw
        if raw is not None:
            raw.append(piece)
            self._raw_chars += len(piece)
            self._raw_tokens += 1
            if self._splitter.seen_reasoning or self._raw_chars > RETHINK_LIMIT:
                self._raw = None
            elif THINK_CLOSE in "".join(raw[-8:]):
                # A template that opens <think> in the prompt: the reply only closes it, so all
                # shown so far was thinking.  Start the bubble again, inside the block.
                text, tokens = "".join(raw), self._raw_tokens
                self.begin_stream(in_reasoning=True)
                self._raw = None
                for part in self._splitter.feed(text):
                    target = self._think_pieces if part.kind == "reasoning" else self._pieces
                    target.append(part.text)
                self.reasoning_tokens = tokens
                return
        for part in self._splitter.feed(piece):
            (self._think_pieces if part.kind == "reasoning" else self._pieces).append(part.text)
        if self._splitter.in_reasoning:
            self.reasoning_tokens += 1

    def render_pending(self) -> None:
        """Commit finished blocks to the stable part and re-render the unfinished tail."""
        if self._think_pieces:
            new = "".join(self._think_pieces)
            self._think_pieces.clear()
            if not self._reasoning:
                new = new.lstrip()
            self._reasoning += new
            self.reasoning_body.append_plain(new)
            if not self.think_button.isVisible():
                self.think_button.show()
                if not self._think_touched:  # open while it streams, folded when done
                    self.think_button.setChecked(True)
            self.think_button.setText(f"Thinking… ({self.reasoning_tokens} tokens)")
            self._on_think_toggled(self.think_button.isChecked())
            self.render_count += 1
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

    def end_stream(
        self, final_text: str | None = None, reasoning_tokens: int | None = None
    ) -> None:
        """Finish the reply; ``final_text`` is the whole raw reply (reasoning included)."""
        for part in self._splitter.finish():
            (self._think_pieces if part.kind == "reasoning" else self._pieces).append(part.text)
        self.render_pending()
        self.streaming = False
        if final_text is not None:
            reasoning, answer = split_reasoning(final_text)
            if answer != self.text:
                self.set_text(answer)
            if reasoning != self.reasoning.strip() or reasoning:
                self.set_reasoning(reasoning)
        self.set_thinking_label(
            reasoning_tokens if reasoning_tokens is not None else self.reasoning_tokens
        )

    def set_thinking_label(self, tokens: int | None) -> None:
        self.think_button.setText(f"Thinking ({tokens} tokens)" if tokens else "Thinking")


class ChatView(QScrollArea):
    """All messages of one conversation; the last one may be streaming.

    Signals:
        edit_requested(int): the user wants to edit and resend this user message (its id).
        regenerate_requested(int): the user wants this assistant reply written again (its id).
        switch_requested(int): the user wants this alternative shown (a message id).
        link_activated(QUrl): a link in a message was clicked (never opened by the view).
        rendered(): a streaming render happened (tests and the benchmark watch it).
    """

    edit_requested = Signal(int)
    regenerate_requested = Signal(int)
    switch_requested = Signal(int)
    delete_requested = Signal(int)
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
        self._hidden: list[Shown] = []
        self.setWidget(inner)
        self.messages: list[MessageWidget] = []
        self._streaming: MessageWidget | None = None
        self._interval_ms: float = MIN_RENDER_INTERVAL_MS
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
        self,
        role: str,
        text: str,
        message_id: int | None = None,
        stats: str = "",
        alternatives: list[int] | None = None,
    ) -> MessageWidget:
        widget = self._build(Shown(role, text, message_id, stats, "", alternatives or []))
        self._insert(widget)
        return widget

    def set_messages(self, messages: Sequence[Shown | tuple[str, str, int | None, str]]) -> None:
        """Show a conversation: a :class:`Shown` (or (role, text, id, stats)) per message.

        Only the last :data:`SHOWN_AT_ONCE` are built; "Show earlier messages" builds more, so
        opening a long conversation costs the same as a short one.
        """
        self.clear()
        items = [_shown(m) for m in messages]
        self._hidden = items[:-SHOWN_AT_ONCE] if len(items) > SHOWN_AT_ONCE else []
        for item in items[len(self._hidden) :]:
            self._insert(self._build(item), update=False)
        self._show_earlier_button()
        self._update_actions()

    def show_earlier(self) -> None:
        """Build the previous :data:`SHOWN_AT_ONCE` messages above the ones shown."""
        batch = self._hidden[-SHOWN_AT_ONCE:]
        del self._hidden[-SHOWN_AT_ONCE:]
        widgets = [self._build(m) for m in batch]
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

    def _build(self, item: Shown) -> MessageWidget:
        widget = MessageWidget(item.role, item.message_id)
        widget.set_text(item.text)
        widget.set_stats(item.stats)
        if item.reasoning:
            widget.set_reasoning(item.reasoning)
            widget.set_thinking_label(item.reasoning_tokens)
        widget.set_alternatives(item.alternatives)
        return widget

    def _connect(self, widget: MessageWidget) -> None:
        widget.edit_requested.connect(self.edit_requested)
        widget.regenerate_requested.connect(self.regenerate_requested)
        widget.switch_requested.connect(self.switch_requested)
        widget.menu_requested.connect(lambda pos, w=widget: self._exec_menu(w, pos))
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
        # Any user message can be edited and any reply regenerated: both add an alternative
        # (a new branch), so nothing is lost.
        seen_user = False
        for widget in self.messages:
            can_act = not self._busy and widget.message_id is not None
            seen_user = seen_user or widget.role == "user"
            widget.edit_button.setVisible(can_act and widget.role == "user")
            widget.regenerate_button.setVisible(
                can_act and widget.role in ("assistant", "error") and seen_user
            )
            widget.set_actions_enabled(not self._busy)

    def context_menu(self, widget: MessageWidget) -> QMenu:
        """The right-click menu of a message: copy it, and (when idle) edit, regenerate, delete."""
        menu = QMenu(self)
        menu.addAction(
            "Copy text", lambda: QGuiApplication.clipboard().setText(widget.plain_text())
        )
        menu.addAction("Copy as Markdown", widget.copy_text)
        mid = widget.message_id
        if mid is not None and not self._busy:
            if widget.role == "user":
                menu.addAction("Edit", lambda: self.edit_requested.emit(mid))
            if widget.regenerate_button.isVisibleTo(widget):
                menu.addAction("Regenerate", lambda: self.regenerate_requested.emit(mid))
            menu.addSeparator()
            menu.addAction("Delete…", lambda: self._ask_delete(widget))
        return menu

    def _exec_menu(self, widget: MessageWidget, pos: QPoint) -> None:
        menu = self.context_menu(widget)
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)  # one per right-click
        menu.exec(pos)

    def _ask_delete(self, widget: MessageWidget) -> None:
        if widget.message_id is None:
            return
        below = "" if widget is self.messages[-1] else " and the messages below it"
        if confirm(self, "Delete message", f"Delete this message{below}?"):
            self.delete_requested.emit(widget.message_id)

    def index_of(self, message_id: int) -> int:
        """The position of a shown message (-1 when it is not shown)."""
        ids = [m.message_id for m in self.messages]
        return ids.index(message_id) if message_id in ids else -1

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

    def end_stream(
        self, final_text: str | None = None, stats: str = "", reasoning_tokens: int | None = None
    ) -> MessageWidget | None:
        widget = self._streaming
        if widget is None:
            return None
        self._timer.stop()
        widget.end_stream(final_text, reasoning_tokens)
        widget.set_stats(stats)
        self._streaming = None
        self._update_actions()
        self.rendered.emit()
        return widget

    def drop_stream(self) -> None:
        """Take away the streaming bubble: the reply produced nothing to show."""
        widget = self._streaming
        if widget is None:
            return
        self._timer.stop()
        self._streaming = None
        if widget in self.messages:
            self.remove_from(self.messages.index(widget))

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

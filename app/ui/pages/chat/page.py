"""The Chat page: conversations on the left, the streaming conversation in the middle, options right.

The page owns one :class:`~app.core.engine.Engine` (one child process) and talks to it only from
background tasks, one at a time: a *load* task (read the header, plan memory, load) or a *reply*
task (stream tokens).  Stop cancels the reply through ``Task.on_cancel = engine.cancel``.  An engine
crash or a failed load becomes an error message in the conversation; the next send loads the model
again in a fresh process.  Conversations live in the SQLite file (:class:`ChatStore`) as a tree:
Regenerate adds another reply next to the old one and Edit (on any user message) a new branch, and
``< 2/3 >`` in a bubble switches between them.

Before a reply the prompt is counted with the model's tokenizer (in the reply task, off the GUI
thread).  When it will not fit the context with room for a reply, nothing is sent: a banner offers
to leave the oldest turns out -- as llama.cpp's context shift does; remembered for the chat -- or
to start a new chat with the message.  Each reply's generation speed is kept
(:func:`app.core.speed.record_measured`), so the recommendation rule uses what this machine really
did.  Below :data:`NARROW_PAGE_PX` the options panel folds away (the Options toggle brings it back,
in the conversation list's place), so the page works in a 900 px window.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QEvent, QSize, Qt, QTimer, QUrl
from PySide6.QtGui import QDesktopServices, QKeySequence, QResizeEvent, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.core import speed
from app.core.chats import (
    ChatStore,
    ChatStoreError,
    Conversation,
    Message,
    engine_messages,
    read_export,
    split_reasoning,
)
from app.core.engine import Engine, EngineCrashed, EngineError, GenerationStats
from app.core.engine.protocol import LoadedInfo, TokenizeRequest
from app.core.planning import LoadPlan, PlanError
from app.ui.bridge import CancelToken, LatestTask
from app.ui.dialogs import confirm
from app.ui.pages.chat.bars import ConversationSidebar, ModelBar, OverflowBanner
from app.ui.pages.chat.options import Composer, SamplingPanel
from app.ui.pages.chat.support import model_choices, stats_words
from app.ui.pages.chat.view import ChatView, ElidedLabel, Shown
from app.ui.widgets.cards import PlainLabel, plain_tooltip

_PER_MESSAGE_TOKENS = 8  # role markers and separators a chat template adds around each message
# Below this page width the options panel folds away by itself (the chat keeps a usable width);
# a 900 px window leaves the page about 700.
NARROW_PAGE_PX = 860
_OVERFLOW = re.compile(r"the prompt is (\d+) tokens but the context holds (\d+)")


@dataclass(frozen=True)
class _Step:
    """A load task's progress line."""

    text: str


@dataclass(frozen=True)
class _Overflow:
    """The prompt would not fit: nothing was sent."""

    prompt_tokens: int
    n_ctx: int
    reserve: int


@dataclass(frozen=True)
class _Dropped:
    """The oldest ``count`` messages were left out of the prompt to make it fit."""

    count: int
    prompt_tokens: int


def reply_reserve(n_ctx: int, max_tokens: int) -> int:
    """Room kept for the reply when checking that a prompt fits: up to a quarter of the context."""
    return max(1, min(max_tokens, n_ctx // 4))


def count_prompt(engine: Engine, messages: list[dict[str, str]]) -> list[int]:
    """Tokens per message (with the template's usual overhead), by the loaded model's tokenizer.

    The engine formats the real prompt itself; this count is close to it (within a few tokens per
    message) and is what decides whether to ask before sending.
    """
    return [
        len(engine.request(TokenizeRequest(m["content"], add_bos=False), timeout=60))
        + _PER_MESSAGE_TOKENS
        for m in messages
    ]


def drop_oldest(
    messages: list[dict[str, str]], counts: list[int], budget: int
) -> tuple[list[dict[str, str]], int]:
    """Leave out the oldest turns until the prompt fits ``budget`` tokens; how many went.

    The system prompt and the last message always stay; a turn goes whole (a user message with
    the replies that follow it), so the model never sees a reply without its question.
    """
    keep_head = 1 if messages and messages[0]["role"] == "system" else 0
    start = keep_head
    total = sum(counts)
    while total > budget and start < len(messages) - 1:
        total -= counts[start]
        start += 1
        while start < len(messages) - 1 and messages[start]["role"] != "user":
            total -= counts[start]
            start += 1
    return messages[:keep_head] + messages[start:], start - keep_head


class ChatPage(QWidget):
    """Chat with a local model (see the module docstring).  Public slots are used by other pages."""

    def __init__(self, context: Any) -> None:
        super().__init__()
        self.context = context
        self.settings = context.settings
        self.store: ChatStore = context.chats
        self.engine = Engine()
        self.loaded: LoadedInfo | None = None
        self.conversation: Conversation | None = None
        self._task = LatestTask(context.runner, self)
        self._task.item_produced.connect(self._on_task_item)
        self._task.finished.connect(self._on_task_finished)
        self._task.failed.connect(self._on_task_failed)
        self._mode = ""  # "load" | "reply" while a task runs
        self.load_plan: LoadPlan | None = None  # the last plan a load followed
        self._after_load: Callable[[], None] | None = None
        self._reply_conv = 0
        self._reply_started = 0.0
        self._live_shown = 0.0
        self._reply_pieces = 0
        self._reply_stats: GenerationStats | None = None
        self._editing_id: int | None = None
        self._reply_parent: int | None = None
        self._reply_reasoning_tokens: int | None = None
        self._pending_overflow: _Overflow | None = None
        self._context_base = 0
        self._closed = False
        self._narrow: bool | None = None  # the page's width class at the last resize
        self.ignore_eos = False  # tests and benchmarks: replies always run to max_tokens
        self.check_fit = True  # count the prompt before sending (benchmarks without an engine: off)
        self._build()
        self.refresh_prompt_presets()
        self.options.load_defaults(self.settings)
        self.refresh_models()
        self.refresh_conversations()
        events = getattr(context, "events", None)
        if events is not None:
            events.library_changed.connect(self.refresh_models)
            events.settings_changed.connect(self._on_settings_changed)
        first = self.sidebar.first_id()
        if first is not None:
            self.open_conversation(first)
        self._watchdog = QTimer(self)
        self._watchdog.setInterval(2000)
        self._watchdog.timeout.connect(self._check_engine)
        self._watchdog.start()
        self._update_state()

    # ---- layout -------------------------------------------------------------------------
    def _build(self) -> None:
        self.sidebar = ConversationSidebar()
        self.sidebar.selected.connect(self.open_conversation)
        self.sidebar.renamed.connect(self.rename_conversation)
        self.sidebar.new_requested.connect(self.new_chat)
        self.sidebar.delete_requested.connect(self.delete_conversation)
        self.sidebar.export_requested.connect(self._ask_export)
        self.sidebar.import_requested.connect(self._ask_import)
        self.conversation_list = self.sidebar.list
        self.model_bar = ModelBar(self.settings.default_n_ctx)
        self.model_bar.model_picked.connect(self.choose_model)
        self.model_bar.load_requested.connect(lambda: self.load_model())
        self.model_bar.eject_requested.connect(self.eject)
        bar = self.model_bar
        self.model_picker, self.auto_fit = bar.picker, bar.auto_fit
        self.ctx_box, self.gpu_box, self.load_status = bar.ctx_box, bar.gpu_box, bar.status

        self.speed_label = ElidedLabel("")  # one line: wrapped, it became a narrow column
        self.speed_label.setObjectName("muted")
        self.context_bar = QProgressBar()
        self.context_bar.setMinimumWidth(120)
        self.context_bar.setMaximumWidth(190)
        self.context_bar.setFormat("%v / %m tokens")
        self.context_bar.setToolTip("How much of the context window this conversation uses")
        status = QHBoxLayout()
        status.addWidget(self.speed_label, 1)
        status.addWidget(PlainLabel("Context", name="muted"))
        status.addWidget(self.context_bar)

        self.view = ChatView()
        self.view.edit_requested.connect(self.edit_message)
        self.view.regenerate_requested.connect(self.regenerate)
        self.view.switch_requested.connect(self.switch_alternative)
        self.view.delete_requested.connect(self.delete_message)
        self.view.link_activated.connect(self._on_link)
        self.composer = Composer()
        self.composer.send_requested.connect(self.send)
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("primary")
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the reply (Esc)")
        self.stop_button.clicked.connect(self.stop)
        self.edit_note = PlainLabel("", name="muted")
        self.edit_note.setWordWrap(True)
        self.overflow_banner = OverflowBanner()
        self.overflow_banner.drop_requested.connect(self.send_dropping_oldest)
        self.overflow_banner.new_chat_requested.connect(self.new_chat_with_message)
        self.overflow_banner.dismissed.connect(self._hide_overflow)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.composer, 1)
        bottom.addLayout(buttons)

        center = QWidget()
        mid = QVBoxLayout(center)
        mid.setContentsMargins(4, 8, 4, 8)
        mid.addWidget(self.model_bar)
        mid.addLayout(status)
        mid.addWidget(self.view, 1)
        mid.addWidget(self.overflow_banner)
        mid.addWidget(self.edit_note)
        mid.addLayout(bottom)

        self.options = SamplingPanel()
        self.options.changed.connect(self._on_options_changed)
        self.options.prompt_save_requested.connect(self.save_prompt_preset)
        self.options.prompt_delete_requested.connect(self.delete_prompt_preset)
        right = self.options_panel = QWidget()
        right_col = QVBoxLayout(right)
        right_col.setContentsMargins(4, 8, 8, 8)
        right_col.addWidget(self.options)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.sidebar)
        splitter.addWidget(center)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        self.sidebar.setMinimumWidth(150)
        right.setMinimumWidth(200)
        splitter.setSizes([200, 640, 240])
        self.chats_toggle, self.options_toggle = bar.chats_toggle, bar.options_toggle
        self.chats_toggle.toggled.connect(lambda on: self._show_panel(self.sidebar, on))
        self.options_toggle.toggled.connect(lambda on: self._show_panel(right, on))
        self._splitter = splitter
        # The page may be narrower than all three panels: below NARROW_PAGE_PX the options fold
        # away (resizeEvent), so only the list and the chat have to fit.  Without this the
        # window could not get smaller than all three together (984 px, issue 16).
        self.setMinimumWidth(
            self.sidebar.minimumWidth()
            + center.minimumSizeHint().width()
            + 2 * splitter.handleWidth()
        )
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

        escape = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        escape.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        escape.activated.connect(self._on_escape)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        narrow = self.width() < NARROW_PAGE_PX
        if narrow != self._narrow:
            # Only when the width class changes: the toggle's choice stands until then.
            self._narrow = narrow
            self.options_toggle.setChecked(not narrow)

    def _show_panel(self, panel: QWidget, shown: bool) -> None:
        panel.setVisible(shown)
        if shown and self._narrow:
            # Narrow: one side panel at a time, or the chat would be squeezed past its minimum.
            other = self.options_toggle if panel is self.sidebar else self.chats_toggle
            other.setChecked(False)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        # The list and the chat (setMinimumWidth in _build), not the options too: they fold
        # away when the page gets narrow, and the window must be able to make it narrow.
        return QSize(self.minimumWidth(), super().minimumSizeHint().height())

    # ---- state --------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._task.busy

    @property
    def generating(self) -> bool:
        return self.busy and self._mode == "reply"

    def _update_state(self) -> None:
        busy = self.busy
        self.send_button.setEnabled(not busy)
        self.stop_button.setEnabled(self.generating)
        self.model_bar.set_busy(busy, self.loaded is not None)
        self.view.set_busy(busy)

    def selected_model(self) -> str | None:
        return self.model_bar.selected_model()

    # ---- models -------------------------------------------------------------------------
    def refresh_models(self) -> None:
        """Fill the picker from the library (keeps the current choice)."""
        self.model_bar.set_models(model_choices(self.settings))

    def _on_settings_changed(self) -> None:
        self.refresh_models()  # the library folder may have changed
        if self.auto_fit.isChecked() and not self.busy:
            self.ctx_box.setValue(self.settings.default_n_ctx)

    def _select_model(self, path: str) -> None:
        self.model_bar.select_model(path)

    def choose_model(self, path: str | Path, load: bool = True) -> None:
        """Select a model file in the picker (adding it when it is not in the library)."""
        self._select_model(str(path))
        if self.conversation is not None:
            self.conversation = self.store.update(self.conversation.id, model_path=str(path))
        if load:
            self.load_model()

    def open_model(self, path: str | Path) -> None:
        """Start chatting with ``path`` (the Library page's "Chat" action)."""
        self.new_chat()
        self.choose_model(path)

    def load_model(self, then: Callable[[], None] | None = None) -> bool:
        """Load the selected model off the GUI thread; ``then`` runs once it is loaded."""
        path = self.selected_model()
        if self.busy:
            return False
        if not path:
            self._show_error(
                "Choose a model first: pick one from the library or Browse… for a file."
            )
            return False
        auto = self.auto_fit.isChecked()
        n_ctx, ngl = self.ctx_box.value(), self.gpu_box.value()
        default_ctx, threads = self.settings.default_n_ctx, self.settings.threads()
        engine = self.engine
        planner = self.context.planner
        # the workers listed in Settings: the plan may split the model over them
        workers = [w for w in self.settings.workers.split(",") if w.strip()]

        def work(token: CancelToken) -> Iterator[Any]:
            plan = LoadPlan(n_ctx, ngl, "chosen by hand")
            if auto:
                yield _Step(f"Planning memory for {Path(path).name}…")
                # the core planner: the window's profile and its own dry-run engine, never this
                # chat's engine (which may still hold the previous model)
                try:
                    plan = planner.plan_load(path, default_ctx, workers=workers)
                except PlanError as exc:
                    hint = "Untick Auto fit to try your own context and GPU layers anyway."
                    raise PlanError(f"{exc}. {hint}") from exc
                yield plan
            if token.cancelled:
                return
            yield _Step(
                f"Loading {Path(path).name} (context {plan.n_ctx}, GPU layers {plan.n_gpu_layers})…"
            )
            yield engine.load(path, n_threads=threads, **plan.load_kwargs())

        self.loaded = None
        self._after_load = then
        self._mode = "load"
        self._task.start(work, name="load model")
        self.load_status.setText(f"Preparing {Path(path).name}…")
        self._update_state()
        return True

    def eject(self) -> None:
        """Unload the model and stop the engine process (memory back to the system)."""
        if self.busy:
            return
        engine = self.engine
        self.loaded = None
        self._mode = "eject"
        self._task.start(lambda _token: engine.close(), name="eject model")
        self.load_status.setText("No model loaded")
        self._update_state()

    # ---- conversations ------------------------------------------------------------------
    def refresh_conversations(self) -> None:
        current = self.conversation.id if self.conversation else None
        self.sidebar.show_conversations(self.store.conversations(), current)

    def new_chat(self) -> None:
        """Ctrl+N: a fresh conversation (an empty current one is reused, not duplicated)."""
        if self.conversation is not None and not self.store.messages(self.conversation.id):
            self.composer.setFocus()
            return
        conv = self.store.create(
            model_path=self.selected_model(), system_prompt=self.settings.system_prompt
        )
        self.options.load_defaults(self.settings)
        self.open_conversation(conv.id)
        self.composer.setFocus()

    def open_conversation(self, conversation_id: int) -> None:
        self._cancel_edit()
        self._hide_overflow()
        conv = self.store.get(conversation_id)
        self.conversation = conv
        self._show_path(self.store.messages(conv.id))
        self.options.set_values(conv.options, conv.system_prompt)
        if conv.model_path and not self.busy:
            self._select_model(conv.model_path)
        self.refresh_conversations()
        self._update_state()

    def _show_path(self, messages: list[Message]) -> None:
        """Show the conversation's active branch, each message with its alternatives."""
        assert self.conversation is not None
        alternatives = self.store.alternatives(self.conversation.id)
        self.view.set_messages(
            [
                Shown(
                    m.role,
                    m.content,
                    m.id,
                    stats_words(m.stats) if m.stats else "",
                    m.reasoning,
                    alternatives.get(m.parent_id, []),
                    int((m.stats or {}).get("reasoning_tokens", 0) or 0),
                )
                for m in messages
            ]
        )
        used, words = 0, ""
        for msg in messages:
            if msg.stats:
                used = int(msg.stats.get("prompt_tokens", 0)) + int(msg.stats.get("tokens", 0))
                words = stats_words(msg.stats)
        self._show_context(used)
        # This conversation's last reply, never the one shown before (a new chat has none).
        self.speed_label.setText(words)

    def switch_alternative(self, message_id: int) -> None:
        """``<`` / ``>`` in a bubble: show that alternative and the branch below it."""
        if self.busy or self.conversation is None:
            return
        self._cancel_edit()
        self._show_path(self.store.select(self.conversation.id, message_id))
        self._update_state()

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        conv = self.store.rename(conversation_id, title)
        if self.conversation and self.conversation.id == conv.id:
            self.conversation = conv
        self.refresh_conversations()

    def delete_conversation(self, conversation_id: int) -> None:
        if self.generating and self._reply_conv == conversation_id:
            self.stop()
        self.store.delete(conversation_id)
        if self.conversation and self.conversation.id == conversation_id:
            self.conversation = None
            self.view.clear()
            self._show_context(0)
            self.speed_label.setText("")
        self.refresh_conversations()
        first = self.sidebar.first_id()
        if self.conversation is None and first is not None:
            self.open_conversation(first)
        self._update_state()

    def delete_message(self, message_id: int) -> None:
        """A message's "Delete…": it and its branch below go; a sibling alternative shows next."""
        if self.busy or self.conversation is None:
            return
        cid = self.conversation.id
        try:
            msg = self.store.message(message_id)
        except ChatStoreError:
            return
        siblings = self.store.alternatives(cid).get(msg.parent_id, [])
        others = [i for i in siblings if i != message_id]
        self._cancel_edit()
        self.store.delete_messages_from(cid, message_id)
        if others:
            # The nearest earlier alternative (or the next one) takes its place.
            at = siblings.index(message_id)
            path = self.store.select(cid, others[max(0, at - 1)])
        else:
            path = self.store.messages(cid)
        self._show_path(path)
        self._update_state()

    def _on_options_changed(self) -> None:
        if self.conversation is not None:
            # the panel's values over the chat's own (drop_oldest is not a panel value)
            self.conversation = self.store.update(
                self.conversation.id,
                options={**self.conversation.options, **self.options.values()},
                system_prompt=self.options.system_prompt.toPlainText(),
            )

    # ---- sending ------------------------------------------------------------------------
    def send(self) -> None:
        """Send the composer's text (Enter); while editing, it becomes a new branch."""
        text = self.composer.toPlainText().strip()
        if not text or self.busy:
            return
        self._hide_overflow()
        if self.conversation is None:
            self.conversation = self.store.create(
                model_path=self.selected_model(),
                system_prompt=self.options.system_prompt.toPlainText(),
                options=self.options.values(),
            )
        cid = self.conversation.id
        parent: int | None = None
        if self._editing_id is not None:
            # An edit is a sibling of the original (same parent): the old branch stays, < > on
            # the message switches back to it.
            edited = self.store.message(self._editing_id)
            parent = edited.parent_id
            at = self.view.index_of(edited.id)
            if at >= 0:
                self.view.remove_from(at)
            self._cancel_edit()
            msg = self.store.add_message(cid, "user", text, parent_id=parent)
        else:
            msg = self.store.add_message(cid, "user", text)
        alternatives = self.store.alternatives(cid).get(msg.parent_id, [])
        self.view.add_message("user", text, msg.id, alternatives=alternatives)
        self.composer.clear()
        self.refresh_conversations()
        self._reply(msg.id)

    def _history(self, parent_id: int | None) -> list[Message]:
        """The active path up to and including ``parent_id`` (what a reply below it answers)."""
        assert self.conversation is not None
        path = self.store.messages(self.conversation.id)
        ids = [m.id for m in path]
        return path[: ids.index(parent_id) + 1] if parent_id in ids else []

    def _reply(self, parent_id: int | None = None, drop: bool | None = None) -> None:
        """Answer below ``parent_id`` (loading the model first when needed)."""
        path = self.selected_model()
        self._check_engine()
        if self.loaded is None or (path and Path(self.loaded.path) != Path(path)):
            self.load_model(then=lambda: self._reply(parent_id, drop))
            return
        assert self.conversation is not None
        conv = self.conversation
        messages = engine_messages(
            self.options.system_prompt.toPlainText(), self._history(parent_id)
        )
        sampling = self.options.sampling()
        max_tokens = self.options.max_tokens.value()
        engine, ignore_eos, check_fit = self.engine, self.ignore_eos, self.check_fit
        n_ctx = self.loaded.n_ctx
        reserve = reply_reserve(n_ctx, max_tokens)
        if drop is None:
            drop = bool(conv.options.get("drop_oldest"))

        def work(token: CancelToken) -> Iterator[Any]:
            nonlocal messages
            try:
                counts = count_prompt(engine, messages) if check_fit else []
            except EngineCrashed:
                raise
            except EngineError:  # no count: the engine's own check still says so exactly
                counts = []
            if counts and sum(counts) + reserve > n_ctx:
                if not drop or len(messages) < 2:
                    yield _Overflow(sum(counts), n_ctx, reserve)
                    return
                messages, gone = drop_oldest(messages, counts, n_ctx - reserve)
                kept = sum(counts[-len(messages) :]) if messages else 0
                if kept + reserve > n_ctx:  # the last message alone is too long
                    yield _Overflow(kept, n_ctx, reserve)
                    return
                yield _Dropped(gone, kept)
            if token.cancelled:
                return
            stream = engine.chat(
                messages, max_tokens=max_tokens, sampling=sampling, ignore_eos=ignore_eos
            )
            for item in stream:
                if token.cancelled:  # a Stop that came before the request reached the child
                    engine.cancel()
                yield item

        self._reply_conv = conv.id
        self._reply_parent = parent_id
        self._reply_started = time.perf_counter()
        self._reply_pieces = 0
        self._live_shown = 0.0
        self._reply_stats = None
        self._reply_reasoning_tokens = None
        self._mode = "reply"
        self.view.begin_stream()
        self.speed_label.setText("Counting the prompt…")
        task = self._task.start(work, name="chat reply")
        task.on_cancel = engine.cancel
        self._update_state()

    def stop(self) -> None:
        """Stop the reply (Esc); what was written so far is kept."""
        if self.generating and self._task.current is not None:
            self._task.current.cancel()

    def regenerate(self, message_id: int) -> None:
        """Write a reply again; the old one stays as an alternative (``< 1/2 >``)."""
        if self.busy or self.conversation is None:
            return
        self._cancel_edit()
        self._hide_overflow()
        old = self.store.message(message_id)
        at = self.view.index_of(message_id)
        if at >= 0:
            self.view.remove_from(at)
        self._reply(old.parent_id)

    def edit_message(self, message_id: int) -> None:
        """Put a user message in the composer; sending it starts a new branch from there."""
        if self.busy or self.conversation is None:
            return
        try:
            msg = self.store.message(message_id)
        except ChatStoreError:
            return
        if msg.role != "user" or msg.conversation_id != self.conversation.id:
            return
        self._editing_id = message_id
        self.composer.setPlainText(msg.content)
        self.composer.setFocus()
        self.edit_note.setText(
            "Editing a message: Enter sends it as a new branch (the original stays; < > on the "
            "message switches), Esc cancels."
        )

    def _cancel_edit(self) -> None:
        if self._editing_id is not None:
            self._editing_id = None
            self.composer.clear()
        self.edit_note.setText("")

    # ---- context overflow ---------------------------------------------------------------
    def _show_overflow(self, item: _Overflow) -> None:
        self._pending_overflow = item
        self.overflow_banner.show_overflow(item.prompt_tokens, item.n_ctx, item.reserve)
        self._show_context(item.prompt_tokens)

    def _hide_overflow(self) -> None:
        self._pending_overflow = None
        self.overflow_banner.hide()

    def send_dropping_oldest(self) -> None:
        """The banner's "Leave out the oldest turns": remembered for this chat, then sent."""
        if self.busy or self.conversation is None:
            return
        self._hide_overflow()
        options = {**self.conversation.options, "drop_oldest": True}
        self.conversation = self.store.update(self.conversation.id, options=options)
        path = self.store.messages(self.conversation.id)
        self._reply(path[-1].id if path else None, drop=True)

    def new_chat_with_message(self) -> None:
        """The banner's "New chat": the last message goes to a fresh chat's composer."""
        if self.busy or self.conversation is None:
            return
        self._hide_overflow()
        path = self.store.messages(self.conversation.id)
        text = next((m.content for m in reversed(path) if m.role == "user"), "")
        self.conversation = None
        self.new_chat()
        self.composer.setPlainText(text)
        self.edit_note.setText("A new chat with your message: Enter sends it.")

    # ---- export and import --------------------------------------------------------------
    def export_conversation(self, path: str | Path) -> Path:
        """Write the current chat to ``path``: Markdown (.md) or JSON (anything else)."""
        if self.conversation is None:
            raise ChatStoreError("There is no conversation to export.")
        target = Path(path)
        if target.suffix.lower() in (".md", ".markdown"):
            body = self.store.export_markdown(self.conversation.id)
        else:
            body = json.dumps(self.store.export_json(self.conversation.id), indent=1)
        try:
            target.write_text(body, encoding="utf-8")
        except OSError as exc:
            raise ChatStoreError(f"Cannot write {target.name}: {exc.strerror or exc}") from exc
        self.edit_note.setText(f"Exported to {target}")
        return target

    def import_conversation(self, path: str | Path) -> Conversation:
        """Read a JSON export as a new conversation and open it."""
        conv = self.store.import_json(read_export(Path(path)))
        self.open_conversation(conv.id)
        self.edit_note.setText(f"Imported “{conv.title}” from {Path(path).name}")
        return conv

    def _ask_export(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        if self.conversation is None:
            return
        name = "".join(c if c.isalnum() or c in " -_" else "_" for c in self.conversation.title)
        path, _ = QFileDialog.getSaveFileName(
            self, "Export chat", name.strip() + ".md", "Markdown (*.md);;JSON (*.json)"
        )
        if path:
            try:
                self.export_conversation(path)
            except ChatStoreError as exc:
                self.edit_note.setText(str(exc))

    def _ask_import(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self, "Import a chat", "", "JSON (*.json)")
        if path:
            try:
                self.import_conversation(path)
            except ChatStoreError as exc:
                self.edit_note.setText(str(exc))

    # ---- system prompt presets ----------------------------------------------------------
    def refresh_prompt_presets(self) -> None:
        self.options.set_prompt_presets(self.store.prompt_presets())

    def save_prompt_preset(self, name: str) -> None:
        try:
            self.store.save_prompt_preset(name, self.options.system_prompt.toPlainText())
        except ChatStoreError as exc:
            self.edit_note.setText(str(exc))
            return
        self.refresh_prompt_presets()
        self.options.select_prompt_preset(" ".join(name.split()))

    def delete_prompt_preset(self, name: str) -> None:
        try:
            self.store.delete_prompt_preset(name)
        except ChatStoreError as exc:
            self.edit_note.setText(str(exc))
            return
        self.refresh_prompt_presets()

    def _on_escape(self) -> None:
        if self.generating:
            self.stop()
        else:
            self._cancel_edit()

    def _on_link(self, url: QUrl) -> None:
        """A link in a reply: never followed by itself; the user sees the address and decides."""
        if url.scheme().lower() not in ("http", "https", "mailto"):
            return
        if confirm(self, "Open link", f"Open this address in your browser?\n\n{url.toString()}"):
            QDesktopServices.openUrl(url)

    # ---- task events --------------------------------------------------------------------
    def _on_task_item(self, item: Any) -> None:
        if self._closed:
            return
        if isinstance(item, str):
            self._reply_pieces += 1
            self.view.append_token(item)
            self._show_live_speed()
        elif isinstance(item, GenerationStats):
            self._reply_stats = item
            # counted by the engine, token by token, inside the <think> block
            self._reply_reasoning_tokens = getattr(item, "reasoning_tokens", 0) or None
        elif isinstance(item, _Overflow):
            self._show_overflow(item)
        elif isinstance(item, _Dropped):
            self._context_base = item.prompt_tokens
            if item.count:
                self.edit_note.setText(
                    f"The {item.count} oldest messages were left out to fit the context "
                    "(they stay in the chat)."
                )
            self.speed_label.setText("Waiting for the first token…")
        elif isinstance(item, _Step):
            self.load_status.setText(item.text)
        elif isinstance(item, LoadPlan):
            self.load_plan = item
            self.ctx_box.setValue(item.n_ctx)
            self.gpu_box.setValue(item.n_gpu_layers)
            self.load_status.setToolTip(plain_tooltip(f"Fit plan: {item.reason}"))
        elif isinstance(item, LoadedInfo):
            self.loaded = item
            name = Path(item.path).name
            self.load_status.setText(
                f"{name} · context {item.n_ctx} · GPU layers {item.n_gpu_layers} · "
                f"loaded in {item.load_s:.1f} s"
            )
            self._show_context(self._context_base)

    def _on_task_finished(self) -> None:
        if self._closed:
            return
        mode, self._mode = self._mode, ""
        if mode == "reply":
            self._finish_reply(None)
        elif mode == "load":
            then, self._after_load = self._after_load, None
            self._update_state()
            if then is not None and self.loaded is not None:
                then()
        self._update_state()

    def _on_task_failed(self, message: str, exc: object) -> None:
        if self._closed:
            return
        mode, self._mode = self._mode, ""
        if isinstance(exc, EngineCrashed) or not self.engine.alive:
            self.loaded = None
        found = _OVERFLOW.search(message) if mode == "reply" else None
        if found is not None and self._reply_stats is None:
            # the engine's exact count said no where the estimate said yes: the same question
            n_ctx = int(found.group(2))
            reserve = reply_reserve(n_ctx, self.options.max_tokens.value())
            self._show_overflow(_Overflow(int(found.group(1)), n_ctx, reserve))
            self._finish_reply(None)
        elif mode == "reply":
            self._finish_reply(exc)
        else:
            self._after_load = None
            name = Path(self.selected_model() or "").name
            self.load_status.setText(f"Could not load {name}")
            self._show_error(f"Could not load {name}: {message}")
        self._update_state()

    def _finish_reply(self, error: object) -> None:
        stats = self._reply_stats
        widget = self.view.streaming
        raw = stats.text if stats is not None else ""
        if not raw and widget is not None:  # interrupted: what streamed so far
            raw = (f"<think>{widget.reasoning}</think>" if widget.reasoning else "") + widget.text
        reasoning, text = split_reasoning(raw)
        record = stats.to_json() if stats is not None else None
        words = stats_words(record) if record is not None else ""
        if error is not None and (text or reasoning):
            words = "interrupted"
        if text or reasoning or stats is not None:
            self.view.end_stream(raw, words, self._reply_reasoning_tokens)
            msg = self.store.add_message(
                self._reply_conv,
                "assistant",
                text,
                record,
                parent_id=self._reply_parent,
                reasoning=reasoning,
            )
            if widget is not None:
                widget.message_id = msg.id
                alternatives = self.store.alternatives(self._reply_conv)
                widget.set_alternatives(alternatives.get(msg.parent_id, []))
        else:
            self.view.drop_stream()  # nothing came back: no empty bubble
        if stats is not None:
            self.speed_label.setText(words)
            self._show_context(stats.prompt_tokens + stats.tokens)
            self._record_speed(record)
        elif self._pending_overflow is None:
            self._show_context(self._context_base)  # as before the reply, never 0
        if stats is None and error is None:
            self.speed_label.setText("")  # "Counting the prompt…" must not stay
        if error is not None:
            self.speed_label.setText("")
            self._show_error(_error_words(error), self._reply_conv, parent_id=self._reply_parent)
        self.view.set_busy(False)

    def _record_speed(self, record: dict[str, Any] | None) -> None:
        """Keep a reply's generation speed for the recommendation rule ("measured" on Models)."""
        if record is None or self.loaded is None:
            return
        rate = float(record.get("gen_tok_s", 0.0) or 0.0)
        # A reply of one or two tokens times mostly the first token, not generation.
        if rate > 0 and int(record.get("tokens", 0)) >= 3:
            speed.record_measured(self.loaded.path, rate)

    def _check_engine(self) -> None:
        """Notice an engine that died while idle (killed, out of memory): say so, drop the model."""
        if self.busy or self.loaded is None:
            return
        if not self.engine.alive or self.engine.loaded is None:
            self.loaded = None
            self.load_status.setText(
                "The engine process stopped; the model loads again with your next message."
            )
            self._update_state()

    def _show_error(
        self, text: str, conversation_id: int | None = None, parent_id: int | None = -1
    ) -> None:
        """An error in the conversation (kept with it) or, with no conversation, in the status.

        ``parent_id`` places it where the failed reply would have gone (by default at the end).
        """
        cid = conversation_id or (self.conversation.id if self.conversation else None)
        if cid is None:
            self.load_status.setText(text)
            return
        msg = self.store.add_message(cid, "error", text, parent_id=parent_id)
        if self.conversation is not None and self.conversation.id == cid:
            alternatives = self.store.alternatives(cid).get(msg.parent_id, [])
            self.view.add_message("error", text, msg.id, alternatives=alternatives)

    def _show_live_speed(self) -> None:
        # A few times a second is enough for the eye; QProgressBar repaints synchronously on
        # every setValue, which per token would cost more than the token itself.
        now = time.perf_counter()
        if now - self._live_shown < 0.1 and self._reply_pieces > 1:
            return
        self._live_shown = now
        elapsed = now - self._reply_started
        if elapsed > 0:
            self.speed_label.setText(f"{self._reply_pieces / elapsed:.1f} tok/s…")
        self._show_context(self._context_base + self._reply_pieces, live=True)

    def _show_context(self, used: int, live: bool = False) -> None:
        if not live:
            self._context_base = used
        n_ctx = self.loaded.n_ctx if self.loaded else self.ctx_box.value()
        self.context_bar.setMaximum(max(1, n_ctx))
        self.context_bar.setValue(min(used, n_ctx))

    # ---- shutdown -----------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the reply (kept as far as it got), wait for its task, stop the engine process."""
        if self._closed:
            return
        task = self._task.current
        if task is not None:
            task.cancel()
            task.done.wait(10)
            # Deliver the task's last queued signals now, while the store is still open, so the
            # partial reply and its stats are saved like after a Stop.
            QCoreApplication.sendPostedEvents(self._task, QEvent.Type.MetaCall)
        self._closed = True
        self._watchdog.stop()
        self.engine.close()

    def page_shown(self) -> None:
        self.composer.setFocus()

    def screenshot_setup(self) -> None:
        """``quantdesk screenshots``: one streamed reply when the library has a model."""
        if self.selected_model() is None or self.busy:
            return
        self.new_chat()
        self.options.max_tokens.setValue(64)
        self.composer.setPlainText("Hello! What can you do?")
        self.send()


def _error_words(error: object) -> str:
    if isinstance(error, EngineCrashed):
        return f"{error} The model was unloaded; send again to load it in a fresh engine."
    if isinstance(error, EngineError):
        return f"The engine reported an error ({error.kind}): {error}"
    return f"The reply failed: {error}"

"""The Chat page: conversations on the left, the streaming conversation in the middle, options right.

The page owns one :class:`~app.core.engine.Engine` (one child process) and talks to it only from
background tasks, one at a time: a *load* task (read the header, plan memory, load) or a *reply*
task (stream tokens).  Stop cancels the reply through ``Task.on_cancel = engine.cancel``.  An engine
crash or a failed load becomes an error message in the conversation; the next send loads the model
again in a fresh process.  Conversations live in the SQLite file (:class:`ChatStore`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QEvent, Qt, QTimer, QUrl
from PySide6.QtGui import QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.core.chats import ChatStore, Conversation, engine_messages
from app.core.engine import Engine, EngineCrashed, EngineError, GenerationStats
from app.core.engine.protocol import LoadedInfo
from app.core.planning import LoadPlan, PlanError
from app.ui.bridge import CancelToken, LatestTask
from app.ui.dialogs import confirm
from app.ui.pages.chat.bars import ConversationSidebar, ModelBar
from app.ui.pages.chat.options import Composer, SamplingPanel
from app.ui.pages.chat.support import model_choices, stats_words
from app.ui.pages.chat.view import ChatView
from app.ui.widgets.cards import PlainLabel, plain_tooltip


@dataclass(frozen=True)
class _Step:
    """A load task's progress line."""

    text: str


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
        self._context_base = 0
        self._closed = False
        self.ignore_eos = False  # tests and benchmarks: replies always run to max_tokens
        self._build()
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
        self.conversation_list = self.sidebar.list
        self.model_bar = ModelBar(self.settings.default_n_ctx)
        self.model_bar.model_picked.connect(self.choose_model)
        self.model_bar.load_requested.connect(lambda: self.load_model())
        self.model_bar.eject_requested.connect(self.eject)
        bar = self.model_bar
        self.model_picker, self.auto_fit = bar.picker, bar.auto_fit
        self.ctx_box, self.gpu_box, self.load_status = bar.ctx_box, bar.gpu_box, bar.status

        self.speed_label = PlainLabel("", name="muted")
        self.speed_label.setWordWrap(True)
        self.context_bar = QProgressBar()
        self.context_bar.setFixedWidth(190)
        self.context_bar.setFormat("%v / %m tokens")
        self.context_bar.setToolTip("How much of the context window this conversation uses")
        status = QHBoxLayout()
        status.addWidget(self.speed_label, 1)
        status.addWidget(PlainLabel("Context", name="muted"))
        status.addWidget(self.context_bar)

        self.view = ChatView()
        self.view.edit_requested.connect(self.edit_message)
        self.view.regenerate_requested.connect(self.regenerate)
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
        mid.addWidget(self.edit_note)
        mid.addLayout(bottom)

        self.options = SamplingPanel()
        self.options.changed.connect(self._on_options_changed)
        right = QWidget()
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
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

        escape = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        escape.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        escape.activated.connect(self._on_escape)

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

        def work(token: CancelToken) -> Iterator[Any]:
            plan = LoadPlan(n_ctx, ngl, "chosen by hand")
            if auto:
                yield _Step(f"Planning memory for {Path(path).name}…")
                # the core planner: the window's profile and its own dry-run engine, never this
                # chat's engine (which may still hold the previous model)
                try:
                    plan = planner.plan_load(path, default_ctx)
                except PlanError as exc:
                    hint = "Untick Auto fit to try your own context and GPU layers anyway."
                    raise PlanError(f"{exc}. {hint}") from exc
                yield plan
            if token.cancelled:
                return
            yield _Step(
                f"Loading {Path(path).name} (context {plan.n_ctx}, GPU layers {plan.n_gpu_layers})…"
            )
            yield engine.load(
                path, n_ctx=plan.n_ctx, n_gpu_layers=plan.n_gpu_layers, n_threads=threads
            )

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
        conv = self.store.get(conversation_id)
        self.conversation = conv
        messages = self.store.messages(conv.id)
        self.view.set_messages(
            [(m.role, m.content, m.id, stats_words(m.stats) if m.stats else "") for m in messages]
        )
        used = 0
        for msg in messages:
            if msg.stats:
                used = int(msg.stats.get("prompt_tokens", 0)) + int(msg.stats.get("tokens", 0))
        self._show_context(used)
        self.options.set_values(conv.options, conv.system_prompt)
        if conv.model_path and not self.busy:
            self._select_model(conv.model_path)
        self.refresh_conversations()
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
        self.refresh_conversations()
        first = self.sidebar.first_id()
        if self.conversation is None and first is not None:
            self.open_conversation(first)
        self._update_state()

    def _on_options_changed(self) -> None:
        if self.conversation is not None:
            self.conversation = self.store.update(
                self.conversation.id,
                options=self.options.values(),
                system_prompt=self.options.system_prompt.toPlainText(),
            )

    # ---- sending ------------------------------------------------------------------------
    def send(self) -> None:
        """Send the composer's text (Enter); while editing, it replaces the edited message."""
        text = self.composer.toPlainText().strip()
        if not text or self.busy:
            return
        if self.conversation is None:
            self.conversation = self.store.create(
                model_path=self.selected_model(),
                system_prompt=self.options.system_prompt.toPlainText(),
                options=self.options.values(),
            )
        cid = self.conversation.id
        if self._editing_id is not None:
            self._drop_from(self._editing_id)
            self._cancel_edit()
        msg = self.store.add_message(cid, "user", text)
        self.view.add_message("user", text, msg.id)
        self.composer.clear()
        self.refresh_conversations()
        self._reply()

    def _reply(self) -> None:
        """Answer the conversation's last message (loading the model first when needed)."""
        path = self.selected_model()
        self._check_engine()
        if self.loaded is None or (path and Path(self.loaded.path) != Path(path)):
            self.load_model(then=self._reply)
            return
        assert self.conversation is not None
        conv = self.conversation
        messages = engine_messages(
            self.options.system_prompt.toPlainText(), self.store.messages(conv.id)
        )
        sampling = self.options.sampling()
        max_tokens = self.options.max_tokens.value()
        engine, ignore_eos = self.engine, self.ignore_eos

        def work(token: CancelToken) -> Iterator[Any]:
            stream = engine.chat(
                messages, max_tokens=max_tokens, sampling=sampling, ignore_eos=ignore_eos
            )
            for item in stream:
                if token.cancelled:  # a Stop that came before the request reached the child
                    engine.cancel()
                yield item

        self._reply_conv = conv.id
        self._reply_started = time.perf_counter()
        self._reply_pieces = 0
        self._live_shown = 0.0
        self._reply_stats = None
        self._mode = "reply"
        self.view.begin_stream()
        self.speed_label.setText("Waiting for the first token…")
        task = self._task.start(work, name="chat reply")
        task.on_cancel = engine.cancel
        self._update_state()

    def stop(self) -> None:
        """Stop the reply (Esc); what was written so far is kept."""
        if self.generating and self._task.current is not None:
            self._task.current.cancel()

    def regenerate(self, message_id: int) -> None:
        """Write the last reply again (the old one is replaced)."""
        if self.busy or self.conversation is None:
            return
        self._drop_from(message_id)
        self._reply()

    def edit_message(self, message_id: int) -> None:
        """Put the last user message back in the composer; sending replaces it and what followed."""
        if self.busy or self.conversation is None:
            return
        msg = next(
            (m for m in self.store.messages(self.conversation.id) if m.id == message_id), None
        )
        if msg is None:
            return
        self._editing_id = message_id
        self.composer.setPlainText(msg.content)
        self.composer.setFocus()
        self.edit_note.setText("Editing your last message: Enter sends it again, Esc cancels.")

    def _cancel_edit(self) -> None:
        if self._editing_id is not None:
            self._editing_id = None
            self.composer.clear()
        self.edit_note.setText("")

    def _drop_from(self, message_id: int) -> None:
        assert self.conversation is not None
        ids = [m.message_id for m in self.view.messages]
        self.store.delete_messages_from(self.conversation.id, message_id)
        if message_id in ids:
            self.view.remove_from(ids.index(message_id))

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
        if mode == "reply":
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
        text = stats.text if stats is not None else (widget.text if widget is not None else "")
        words = stats_words(stats.to_json()) if stats is not None else ""
        if error is not None and text:
            words = "interrupted"
        self.view.end_stream(text, words)
        if text or stats is not None:
            msg = self.store.add_message(
                self._reply_conv, "assistant", text, stats.to_json() if stats else None
            )
            if widget is not None:
                widget.message_id = msg.id
        if stats is not None:
            self.speed_label.setText(words)
            self._show_context(stats.prompt_tokens + stats.tokens)
        if error is not None:
            self.speed_label.setText("")
            self._show_error(_error_words(error), self._reply_conv)
        self.view.set_busy(False)

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

    def _show_error(self, text: str, conversation_id: int | None = None) -> None:
        """An error in the conversation (kept with it) or, with no conversation, in the status."""
        cid = conversation_id or (self.conversation.id if self.conversation else None)
        if cid is None:
            self.load_status.setText(text)
            return
        msg = self.store.add_message(cid, "error", text)
        if self.conversation is not None and self.conversation.id == cid:
            self.view.add_message("error", text, msg.id)

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

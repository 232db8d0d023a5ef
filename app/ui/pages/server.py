"""The Server page: start and stop the OpenAI-compatible local server, see what it is doing.

The server (:mod:`app.server`) runs uvicorn in its own thread; starting and stopping happen in
worker tasks (stopping waits for streams and engine processes).  The page shows the address to
give to clients, the API key, the models loaded now (with their plans) and a live request log with
tokens/s.  The pool reports from server threads; a relay signal brings each report to the GUI
thread.  While the server runs the sidebar shows it; closing the window stops it (``shutdown``).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.cancel import CancelToken
from app.server.config import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_TTL_S, ServerOptions
from app.server.models import PoolEvent, RequestRecord
from app.server.runner import LocalServer
from app.ui.context import AppContext
from app.ui.widgets.cards import Banner, Card, PageHeader, PlainLabel, muted
from app.ui.widgets.format import human_bytes

TITLE = "Server"
LOG_ROWS = 200
LOG_COLUMNS = ["Time", "Endpoint", "Model", "Status", "Tokens", "Tok/s", "First token", "End"]
MODEL_COLUMNS = ["Model", "Context", "GPU layers", "Memory", "State"]


class _Relay(QObject):
    """Carries the pool's reports (from server threads) to the GUI thread."""

    report = Signal(object)


class ServerPage(QWidget):
    """Start/Stop, address, key, loaded models and the request log."""

    def __init__(self, context: AppContext) -> None:
        super().__init__()
        self.context = context
        self.server: LocalServer | None = None
        self._busy = False
        self.relay = _Relay(self)
        self.relay.report.connect(self._on_report)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(20, 16, 20, 16)
        outer.setSpacing(12)
        header = PageHeader(
            TITLE,
            "An OpenAI-compatible server on this computer for editors, notebooks and agents. "
            "Models load on first use, planned like everything else: never one that does not fit.",
        )
        self.status = muted("Stopped", wrap=False)
        header.action_row.addWidget(self.status)
        self.start_button = header.add_action(QPushButton("Start"))
        self.start_button.clicked.connect(self.toggle)
        outer.addWidget(header)
        self.error_box = QVBoxLayout()
        outer.addLayout(self.error_box)
        outer.addWidget(self._settings_card())
        self.models_table = self._table(MODEL_COLUMNS)
        models = Card("Loaded models")
        models.add(self.models_table)
        self.models_hint = muted("None yet: a model loads when a request names it.")
        models.add(self.models_hint)
        outer.addWidget(models)
        self.log_table = self._table(LOG_COLUMNS)
        log = Card("Requests")
        log.add(self.log_table)
        outer.addWidget(log, 1)
        s = context.settings
        self.port_spin.setValue(s.server_port)
        self.ttl_spin.setValue(s.server_idle_ttl_s)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self._refresh_models)

    # ---- layout ---------------------------------------------------------------------------
    def _settings_card(self) -> Card:
        card = Card("Address")
        form = QFormLayout()
        self.host_edit = QLineEdit(DEFAULT_HOST)
        self.host_edit.setToolTip("127.0.0.1: only this computer. Any other address needs a key.")
        self.port_spin = QSpinBox()
        self.port_spin.setRange(1, 65535)
        self.port_spin.setValue(DEFAULT_PORT)
        self.key_edit = QLineEdit()
        self.key_edit.setPlaceholderText("none (allowed on 127.0.0.1 only)")
        new_key = QPushButton("New key")
        new_key.clicked.connect(lambda: self.key_edit.setText("qd-" + secrets.token_urlsafe(24)))
        key_row = QHBoxLayout()
        key_row.addWidget(self.key_edit, 1)
        key_row.addWidget(new_key)
        self.ttl_spin = QDoubleSpinBox()
        self.ttl_spin.setRange(0, 7 * 86400)
        self.ttl_spin.setDecimals(0)
        self.ttl_spin.setSuffix(" s")
        self.ttl_spin.setValue(DEFAULT_TTL_S)
        self.ttl_spin.setToolTip("Unload a model nobody used for this long (0: keep it loaded).")
        form.addRow("Host", self.host_edit)
        form.addRow("Port", self.port_spin)
        form.addRow("API key", key_row)
        form.addRow("Unload idle models after", self.ttl_spin)
        card.add(form)
        self.address = PlainLabel("")
        self.address.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.address.setStyleSheet("font-family: monospace;")
        copy = QPushButton("Copy address")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.address.text()))
        row = QHBoxLayout()
        row.addWidget(self.address, 1)
        row.addWidget(copy)
        card.add(row)
        card.add(muted("Clients: base URL above, model = a file name from the Library."))
        self._fields: list[QWidget] = [
            self.host_edit,
            self.port_spin,
            self.key_edit,
            new_key,
            self.ttl_spin,
        ]
        return card

    @staticmethod
    def _table(columns: list[str]) -> QTableWidget:
        table = QTableWidget(0, len(columns))
        table.setHorizontalHeaderLabels(columns)
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)
        return table

    # ---- start / stop ---------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.server is not None and self.server.running

    def options(self) -> ServerOptions:
        s = self.context.settings
        return ServerOptions(
            host=self.host_edit.text().strip() or DEFAULT_HOST,
            port=self.port_spin.value(),
            api_key=self.key_edit.text().strip(),
            idle_ttl_s=float(self.ttl_spin.value()),
            n_ctx=s.default_n_ctx,
            n_threads=s.n_threads or None,
        )

    def toggle(self) -> None:
        if self._busy:
            return
        if self.running:
            self.stop()
        else:
            self.start()

    def start(self, options: ServerOptions | None = None) -> None:
        """Start the server (in a worker task); the page shows the address once it listens."""
        opts = options or self.options()
        self._clear_error()
        self._set_busy(True, "Starting…")
        context = self.context

        def work(_token: CancelToken) -> LocalServer:
            server = LocalServer(opts, context.planner, context.library())
            server.start()
            return server

        self.context.runner.run(
            work, "server-start", on_item=self._on_started, on_failed=self._on_start_failed
        )

    def _on_started(self, server: Any) -> None:
        self.server = server
        self._remember(server.options)
        server.pool.listeners.append(self.relay.report.emit)
        self._set_busy(False, f"Running on port {server.port}")
        self.start_button.setText("Stop")
        self.address.setText(server.base_url)
        for w in self._fields:
            w.setEnabled(False)
        self.timer.start()
        self.context.events.badge_changed.emit(TITLE, -1)

    def _remember(self, options: ServerOptions) -> None:
        """Keep the port and TTL that worked for next time (the key is never stored)."""
        s = self.context.settings
        try:
            if self.port_spin.value() == options.port:  # not an OS-chosen test port
                s.set("server_port", options.port)
            s.set("server_idle_ttl_s", int(options.idle_ttl_s))
            s.save()
        except (ValueError, OSError):
            pass  # a setting not kept is not worth an error next to a running server

    def _on_start_failed(self, message: str, exc: object) -> None:
        self._set_busy(False, "Stopped")
        self._show_error("The server did not start", message)

    def stop(self) -> None:
        """Stop the server (in a worker task: streams end, engine processes stop)."""
        server = self.server
        if server is None:
            return
        self._set_busy(True, "Stopping…")
        self.context.runner.run(
            lambda _t: server.stop(),
            "server-stop",
            on_finished=self._on_stopped,
            on_failed=lambda m, e: self._on_stopped(),
        )

    def _on_stopped(self) -> None:
        self.server = None
        self.timer.stop()
        self._set_busy(False, "Stopped")
        self.start_button.setText("Start")
        self.address.setText("")
        for w in self._fields:
            w.setEnabled(True)
        self._refresh_models()
        self.context.events.badge_changed.emit(TITLE, 0)

    def _set_busy(self, busy: bool, status: str) -> None:
        self._busy = busy
        self.start_button.setEnabled(not busy)
        self.status.setText(status)

    def _show_error(self, headline: str, detail: str) -> None:
        self._clear_error()
        self.error_box.addWidget(Banner(headline, detail, kind="error"))

    def _clear_error(self) -> None:
        while self.error_box.count():
            item = self.error_box.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()

    # ---- live view ------------------------------------------------------------------------
    def _on_report(self, item: object) -> None:
        if isinstance(item, RequestRecord):
            self._add_log_row(item)
        elif isinstance(item, PoolEvent):
            self._refresh_models()

    def _add_log_row(self, r: RequestRecord) -> None:
        t = self.log_table
        t.insertRow(0)
        cells = [
            time.strftime("%H:%M:%S", time.localtime(r.at)),
            r.endpoint + (" (stream)" if r.stream else ""),
            r.model,
            str(r.status),
            f"{r.prompt_tokens} → {r.tokens}",
            f"{r.gen_tok_s:.1f}" if r.tokens > 1 else "",
            f"{r.ttft_s * 1000:.0f} ms" if r.tokens else "",
            r.finish,
        ]
        for col, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setToolTip(text)
            t.setItem(0, col, item)
        while t.rowCount() > LOG_ROWS:
            t.removeRow(t.rowCount() - 1)

    def _refresh_models(self) -> None:
        loaded = self.server.pool.loaded() if self.server is not None else []
        t = self.models_table
        t.setRowCount(len(loaded))
        for row, m in enumerate(loaded):
            memory = human_bytes(m.ram_bytes) + (
                f" + {human_bytes(m.vram_bytes)} GPU" if m.vram_bytes else ""
            )
            state = "answering" if m.busy else f"idle {m.idle_s:.0f} s"
            for col, text in enumerate([m.name, str(m.n_ctx), str(m.n_gpu_layers), memory, state]):
                item = QTableWidgetItem(text)
                item.setToolTip(m.reason)
                t.setItem(row, col, item)
        self.models_hint.setVisible(not loaded)

    # ---- window hooks ---------------------------------------------------------------------
    def shutdown(self) -> None:
        """The window closes: stop the server and its engines now (bounded)."""
        server, self.server = self.server, None
        self.timer.stop()
        if server is not None:
            server.stop()

"""The Settings page: every user setting of :class:`~app.core.settings.Settings`, applied live.

Each change is validated, stored in the shared settings object, saved to disk at once and announced
with ``context.events.settings_changed``.  What applies where: the theme changes the window now; the
library folder refreshes the model lists; threads, context and sampling apply to the next load or
the next new conversation; the Hub token and offline mode to the next Hub request.
A value that cannot be used (a folder that cannot be created) is refused in words and nothing is lost.
"""

from __future__ import annotations

import os
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.core.settings import Settings
from app.ui.pages.chat.options import SamplingPanel
from app.ui.settings_service import apply_theme
from app.ui.widgets.cards import Banner, Card, PageHeader, PlainLabel

_THEMES = [("Follow the system", "system"), ("Light", "light"), ("Dark", "dark")]


class SettingsPage(QWidget):
    """A form over the shared settings; every edit is saved right away."""

    def __init__(self, context: Any) -> None:
        super().__init__()
        self.context = context
        self.settings: Settings = context.settings
        self._loading = False

        self.library_dir = QLineEdit()
        self.library_dir.setPlaceholderText("default folder")
        self.library_browse = QPushButton("Choose…")
        self.library_browse.clicked.connect(self._choose_library)
        self.threads = QSpinBox()
        self.threads.setRange(0, max(64, (os.cpu_count() or 1) * 2))
        self.threads.setSpecialValueText("Automatic")
        self.default_ctx = QSpinBox()
        self.default_ctx.setRange(256, 1 << 20)
        self.default_ctx.setSingleStep(1024)
        self.default_ctx.setSuffix(" tokens")
        self.min_speed = QDoubleSpinBox()
        self.min_speed.setRange(0.0, 1000.0)
        self.min_speed.setDecimals(1)
        self.min_speed.setSuffix(" tokens/s")
        self.min_speed.setToolTip(
            "The Models page recommends the highest quality that fits with headroom and writes at "
            "least this fast (estimated from this machine's measured memory speed)"
        )
        self.hub_token = QLineEdit()
        self.hub_token.setEchoMode(QLineEdit.EchoMode.Password)
        self.hub_token.setPlaceholderText("hf_… (only needed for gated or private models)")
        self.show_token = QCheckBox("Show")
        self.show_token.toggled.connect(
            lambda on: self.hub_token.setEchoMode(
                QLineEdit.EchoMode.Normal if on else QLineEdit.EchoMode.Password
            )
        )
        self.offline = QCheckBox("Work offline (never contact the Hub)")
        self.theme = QComboBox()
        for label, value in _THEMES:
            self.theme.addItem(label, value)
        self.sampling = SamplingPanel()
        self.message = PlainLabel("", name="muted")
        self.message.setWordWrap(True)
        self.reset_button = QPushButton("Reset to defaults")
        self.reset_button.clicked.connect(self.reset)

        folder_row = QHBoxLayout()
        folder_row.addWidget(self.library_dir, 1)
        folder_row.addWidget(self.library_browse)
        token_row = QHBoxLayout()
        token_row.addWidget(self.hub_token, 1)
        token_row.addWidget(self.show_token)
        general = Card("General")
        form = QFormLayout()
        form.addRow("Library folder", folder_row)
        form.addRow("Threads", self.threads)
        form.addRow("Default context", self.default_ctx)
        form.addRow("Recommend at least", self.min_speed)
        form.addRow("Theme", self.theme)
        general.add(form)
        hub = Card("Hugging Face Hub")
        hub_form = QFormLayout()
        hub_form.addRow("Access token", token_row)
        hub_form.addRow("", self.offline)
        hub.add(hub_form)
        chat = Card("New conversations start with")
        chat.add(self.sampling)
        memory = Card("Memory settings (every plan and load uses them)")
        self.swa_full = QCheckBox("Full-size cache for sliding-window layers")
        self.swa_full.setToolTip(
            "Off (default, as llama-server): only the window is kept, far less memory at long "
            "contexts; a chat rewound past the window is read again in full. On: every position is "
            "kept, so even a rewound chat reuses its cache"
        )
        self.flash_attn = QComboBox()
        for label, value in (("Automatic", "auto"), ("On", "on"), ("Off", "off")):
            self.flash_attn.addItem(label, value)
        self.flash_attn.setToolTip(
            "Automatic (default, as llama.cpp): on wherever the device of each layer runs it, "
            "which needs less memory and is faster on CPU; a quantized V cache needs it. Off: "
            "the CPU needs an extra work buffer the plan counts"
        )
        self.n_ubatch = QSpinBox()
        self.n_ubatch.setRange(32, 8192)
        self.n_ubatch.setSingleStep(128)
        self.n_ubatch.setSuffix(" tokens")
        self.n_ubatch.setToolTip(
            "llama.cpp's micro-batch: larger is faster on long prompts, bigger compute buffers"
        )
        memory_form = QFormLayout()
        memory_form.addRow("", self.swa_full)
        memory_form.addRow("Flash attention", self.flash_attn)
        memory_form.addRow("Micro-batch", self.n_ubatch)
        memory.add(memory_form)
        workers = Card("Workers (one model over several computers)")
        self.workers = QLineEdit()
        self.workers.setPlaceholderText(
            "127.0.0.1:50052, 127.0.0.1:50053 (quantdesk worker on each)"
        )
        self.check_workers = QPushButton("Check")
        self.check_workers.clicked.connect(self.probe_workers)
        workers_row = QHBoxLayout()
        workers_row.addWidget(self.workers, 1)
        workers_row.addWidget(self.check_workers)
        self.workers_status = PlainLabel("", name="muted")
        self.workers_status.setWordWrap(True)
        workers_form = QFormLayout()
        workers_form.addRow("Addresses", workers_row)
        workers_form.addRow("", self.workers_status)
        workers.add(workers_form)
        workers_hint = PlainLabel(
            "Start `quantdesk worker` on the other computer and reach it through an SSH tunnel "
            "(ssh -N -L 50052:127.0.0.1:50052 that-computer): llama.cpp's RPC has no "
            "authentication, so never expose a worker to a network you do not trust.",
            name="muted",
        )
        workers_hint.setWordWrap(True)  # unwrapped, this one line made the page 1440 px wide
        workers.add(workers_hint)

        header = PageHeader("Settings", "Changes are saved and applied as you make them.")
        header.add_action(self.reset_button)
        column = QVBoxLayout()
        column.addWidget(header)
        self.problems = QVBoxLayout()
        column.addLayout(self.problems)
        column.addWidget(self.message)
        column.addWidget(general)
        column.addWidget(hub)
        column.addWidget(chat)
        column.addWidget(memory)
        column.addWidget(workers)
        column.addStretch(1)
        inner = QWidget()
        inner.setLayout(column)
        inner.setMaximumWidth(760)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(16, 12, 16, 12)
        outer.addWidget(scroll)

        self.show_settings()
        for problem in self.settings.problems:
            self.problems.addWidget(Banner("A setting was reset", problem))

        self.library_dir.editingFinished.connect(
            lambda: self.change("library_dir", self.library_dir.text().strip())
        )
        self.threads.valueChanged.connect(lambda v: self.change("n_threads", v))
        self.default_ctx.valueChanged.connect(lambda v: self.change("default_n_ctx", v))
        self.min_speed.valueChanged.connect(lambda v: self.change("min_tokens_per_s", v))
        self.hub_token.editingFinished.connect(
            lambda: self.change("hub_token", self.hub_token.text().strip())
        )
        self.offline.toggled.connect(lambda on: self.change("offline", on))
        self.theme.currentIndexChanged.connect(
            lambda _i: self.change("theme", self.theme.currentData())
        )
        self.sampling.changed.connect(self._on_sampling_changed)
        self.swa_full.toggled.connect(lambda on: self.change("swa_full", on))
        self.flash_attn.currentIndexChanged.connect(
            lambda _i: self.change("flash_attn", self.flash_attn.currentData())
        )
        self.n_ubatch.valueChanged.connect(lambda v: self.change("n_ubatch", v))
        self.workers.editingFinished.connect(self._on_workers_edited)

    # ---- showing ------------------------------------------------------------------------
    def show_settings(self) -> None:
        """Put the stored values in the widgets (no change events while doing so)."""
        s = self.settings
        self._loading = True
        try:
            self.library_dir.setText(s.library_dir)
            self.library_dir.setPlaceholderText(str(Settings().library_path()))
            self.threads.setValue(s.n_threads)
            self.default_ctx.setValue(s.default_n_ctx)
            self.min_speed.setValue(s.min_tokens_per_s)
            self.hub_token.setText(s.hub_token)
            self.offline.setChecked(s.offline)
            self.theme.setCurrentIndex(max(0, self.theme.findData(s.theme)))
            self.sampling.load_defaults(s)
            self.workers.setText(s.workers.replace(",", ", "))
            self.swa_full.setChecked(s.swa_full)
            self.flash_attn.setCurrentIndex(max(0, self.flash_attn.findData(s.flash_attn)))
            self.n_ubatch.setValue(s.n_ubatch)
        finally:
            self._loading = False

    # ---- changing -----------------------------------------------------------------------
    def change(self, name: str, value: Any) -> bool:
        """Validate, store, save and announce one setting; False (and a message) when refused."""
        if self._loading or getattr(self.settings, name) == value:
            return True
        try:
            if name == "library_dir" and value:
                _check_folder(value)
            self.settings.set(name, value)
        except (ValueError, OSError) as exc:
            self.message.setText(f"Not saved: {exc}")
            self.show_settings()
            return False
        return self._save(f"Saved {name.replace('_', ' ')}.")

    def _on_sampling_changed(self) -> None:
        if self._loading:
            return
        values = self.sampling.values()
        try:
            for key in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed"):
                self.settings.set(key, values[key])
            self.settings.set("max_tokens", values["max_tokens"])
            self.settings.set("sampling_preset", values["preset"])
            self.settings.set("system_prompt", self.sampling.system_prompt.toPlainText())
        except ValueError as exc:
            self.message.setText(f"Not saved: {exc}")
            return
        self._save("Saved the defaults for new conversations.")

    def _on_workers_edited(self) -> None:
        if self.change("workers", self.workers.text().strip()) and self.settings.workers:
            self.probe_workers()

    def probe_workers(self) -> None:
        """Check each listed worker off the GUI thread: device, free/total memory, latency."""
        from app.core.rpc import parse_workers, probe_all

        addrs = parse_workers(self.settings.workers)
        if not addrs:
            self.workers_status.setText("No workers listed.")
            return
        self.workers_status.setText(f"Checking {len(addrs)} worker(s)…")
        self.check_workers.setEnabled(False)
        self.context.runner.run(
            lambda _token: probe_all(addrs),
            "probe-workers",
            on_item=self._show_workers,
            on_failed=self._workers_failed,
        )

    def _show_workers(self, infos: Any) -> None:
        from app.core.units import human_bytes

        self.check_workers.setEnabled(True)
        lines = []
        for i in infos:
            if i.ok:
                devs = ", ".join(d.name for d in i.devices)
                lines.append(
                    f"✓ {i.address}: {devs}, {human_bytes(i.free_bytes)} free of "
                    f"{human_bytes(i.total_bytes)}, {i.latency_ms:.1f} ms round trip"
                )
            else:
                lines.append(f"✗ {i.address}: {i.error}")
        self.workers_status.setText("\n".join(lines))

    def _workers_failed(self, message: str, _exc: object) -> None:
        self.check_workers.setEnabled(True)
        self.workers_status.setText(f"Could not check the workers: {message}")

    def reset(self) -> None:
        """Every setting back to its default (the Hub token too)."""
        defaults = Settings()
        for name in Settings.field_names():
            setattr(self.settings, name, getattr(defaults, name))
        self.show_settings()
        self._save("All settings are back to their defaults.")

    def _save(self, done: str) -> bool:
        try:
            where = self.settings.save()
        except OSError as exc:
            self.message.setText(f"Could not save the settings: {exc}")
            return False
        apply_theme(self.settings.theme)
        self.message.setText(f"{done} ({where})")
        events = getattr(self.context, "events", None)
        if events is not None:
            events.settings_changed.emit()
        return True

    def _choose_library(self) -> None:
        start = self.library_dir.text() or str(self.settings.library_path())
        folder = QFileDialog.getExistingDirectory(self, "Library folder", start)
        if folder:
            self.library_dir.setText(folder)
            self.change("library_dir", folder)


def _check_folder(value: str) -> None:
    """The folder exists or can be created, and can be written to."""
    from pathlib import Path

    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ValueError(f"the library folder must be a full path, not {value!r}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the folder {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK):
        raise ValueError(f"the folder {path} cannot be written to")

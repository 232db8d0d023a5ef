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
        form.addRow("Theme", self.theme)
        general.add(form)
        hub = Card("Hugging Face Hub")
        hub_form = QFormLayout()
        hub_form.addRow("Access token", token_row)
        hub_form.addRow("", self.offline)
        hub.add(hub_form)
        chat = Card("New conversations start with")
        chat.add(self.sampling)

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
        self.hub_token.editingFinished.connect(
            lambda: self.change("hub_token", self.hub_token.text().strip())
        )
        self.offline.toggled.connect(lambda on: self.change("offline", on))
        self.theme.currentIndexChanged.connect(
            lambda _i: self.change("theme", self.theme.currentData())
        )
        self.sampling.changed.connect(self._on_sampling_changed)

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
            self.hub_token.setText(s.hub_token)
            self.offline.setChecked(s.offline)
            self.theme.setCurrentIndex(max(0, self.theme.findData(s.theme)))
            self.sampling.load_defaults(s)
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

"""Widgets of the Chat page that are not the conversation itself: the composer and the options.

:class:`Composer` is the message box (Enter sends, Shift+Enter starts a new line).
:class:`SamplingPanel` holds the system prompt (with its presets: built-in ones and the user's,
kept in the chat store), the sampling preset and its individual knobs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.core.chats import PromptPreset
from app.core.engine.protocol import Sampling
from app.core.settings import PRESETS, Settings
from app.ui.widgets.cards import PlainLabel

_KNOBS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty")


class Composer(QPlainTextEdit):
    """The message box.

    Signals:
        send_requested(): Enter was pressed (without Shift).
    """

    send_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPlaceholderText("Message the model  (Enter sends, Shift+Enter for a new line)")
        self.setTabChangesFocus(True)
        self.setFixedHeight(84)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                self.insertPlainText("\n")
            else:
                self.send_requested.emit()
            event.accept()
            return
        super().keyPressEvent(event)


class SamplingPanel(QWidget):
    """System prompt, preset and knobs.  Changing a knob by hand makes the preset "custom".

    Signals:
        changed(): any value changed (the page stores it with the conversation).
        prompt_save_requested(str): save the system prompt as a preset with this name.
        prompt_delete_requested(str): delete the user's preset with this name.
    """

    changed = Signal()
    prompt_save_requested = Signal(str)
    prompt_delete_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._updating = False
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setPlaceholderText("System prompt (optional)")
        self.system_prompt.setFixedHeight(90)
        self.prompt_preset = QComboBox()
        self.prompt_preset.setToolTip("Put a saved system prompt in the box above")
        self.prompt_preset.activated.connect(self._on_prompt_preset_chosen)
        self.save_prompt_button = QPushButton("Save…")
        self.save_prompt_button.setToolTip("Save the system prompt as a preset")
        self.save_prompt_button.clicked.connect(self._ask_prompt_name)
        self.delete_prompt_button = QPushButton("Delete")
        self.delete_prompt_button.setToolTip("Delete the chosen preset (yours only)")
        self.delete_prompt_button.clicked.connect(self._delete_prompt_preset)
        self._prompt_presets: dict[str, PromptPreset] = {}
        self.preset = QComboBox()
        for name in (*PRESETS, "custom"):
            self.preset.addItem(name.capitalize(), name)
        self.temperature = self._double(0.0, 5.0, 0.05, 2)
        self.top_k = self._int(0, 1000)
        self.top_p = self._double(0.0, 1.0, 0.01, 2)
        self.min_p = self._double(0.0, 1.0, 0.01, 2)
        self.repeat_penalty = self._double(0.0, 3.0, 0.05, 2)
        self.seed = self._int(-1, 2**31 - 1)
        self.seed.setSpecialValueText("random")
        self.max_tokens = self._int(1, 1 << 20)
        self.max_tokens.setSingleStep(128)

        form = QFormLayout()
        form.addRow("Preset", self.preset)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top K", self.top_k)
        form.addRow("Top P", self.top_p)
        form.addRow("Min P", self.min_p)
        form.addRow("Repeat penalty", self.repeat_penalty)
        form.addRow("Seed", self.seed)
        form.addRow("Max reply tokens", self.max_tokens)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(PlainLabel("System prompt", name="cardTitle"))
        layout.addWidget(self.system_prompt)
        layout.addWidget(self.prompt_preset)  # a row of its own: preset names need the width
        presets = QHBoxLayout()
        presets.addStretch(1)
        presets.addWidget(self.save_prompt_button)
        presets.addWidget(self.delete_prompt_button)
        layout.addLayout(presets)
        layout.addWidget(PlainLabel("Sampling", name="cardTitle"))
        layout.addLayout(form)
        layout.addStretch(1)

        self.preset.currentIndexChanged.connect(self._on_preset_chosen)
        for knob in (*_KNOBS, "seed", "max_tokens"):
            getattr(self, knob).valueChanged.connect(self._on_knob_changed)
        self.system_prompt.textChanged.connect(self._emit_changed)

    def _double(self, low: float, high: float, step: float, decimals: int) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(low, high)
        box.setSingleStep(step)
        box.setDecimals(decimals)
        return box

    def _int(self, low: int, high: int) -> QSpinBox:
        box = QSpinBox()
        box.setRange(low, high)
        return box

    # ---- system prompt presets ----------------------------------------------------------
    def set_prompt_presets(self, presets: list[PromptPreset]) -> None:
        """Fill the preset list (built-in first, then the user's)."""
        current = self.prompt_preset.currentData()
        self._prompt_presets = {p.name: p for p in presets}
        self.prompt_preset.blockSignals(True)
        self.prompt_preset.clear()
        self.prompt_preset.addItem("System prompt presets…", None)
        for p in presets:
            self.prompt_preset.addItem(p.name if p.builtin else f"{p.name} (yours)", p.name)
        index = self.prompt_preset.findData(current)
        self.prompt_preset.setCurrentIndex(max(0, index))
        self.prompt_preset.blockSignals(False)
        self._update_prompt_buttons()

    def select_prompt_preset(self, name: str) -> None:
        self.prompt_preset.setCurrentIndex(max(0, self.prompt_preset.findData(name)))
        self._update_prompt_buttons()

    def choose_prompt_preset(self, name: str) -> None:
        """Put a preset's text in the system prompt (as picking it from the list does)."""
        self.select_prompt_preset(name)
        self._on_prompt_preset_chosen(self.prompt_preset.currentIndex())

    def _on_prompt_preset_chosen(self, _index: int) -> None:
        preset = self._prompt_presets.get(self.prompt_preset.currentData())
        if preset is not None:
            self.system_prompt.setPlainText(preset.text)  # textChanged stores it
        self._update_prompt_buttons()

    def _update_prompt_buttons(self) -> None:
        preset = self._prompt_presets.get(self.prompt_preset.currentData())
        self.delete_prompt_button.setEnabled(preset is not None and not preset.builtin)

    def _ask_prompt_name(self) -> None:
        name, ok = QInputDialog.getText(self, "Save system prompt", "Preset name:")
        if ok and name.strip():
            self.prompt_save_requested.emit(name)

    def _delete_prompt_preset(self) -> None:
        preset = self._prompt_presets.get(self.prompt_preset.currentData())
        if preset is not None and not preset.builtin:
            self.prompt_delete_requested.emit(preset.name)

    # ---- values -------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """The panel as plain data (stored in a conversation's options)."""
        out: dict[str, Any] = {"preset": self.preset.currentData()}
        for knob in (*_KNOBS, "seed", "max_tokens"):
            out[knob] = getattr(self, knob).value()
        return out

    def set_values(self, values: dict[str, Any], system_prompt: str | None = None) -> None:
        """Show stored values (unknown or missing keys keep the current value)."""
        self._updating = True
        try:
            if system_prompt is not None:
                self.system_prompt.setPlainText(system_prompt)
            for knob in (*_KNOBS, "seed", "max_tokens"):
                if isinstance(values.get(knob), (int, float)):
                    getattr(self, knob).setValue(values[knob])
            index = self.preset.findData(values.get("preset"))
            if index >= 0:
                self.preset.setCurrentIndex(index)
        finally:
            self._updating = False

    def load_defaults(self, settings: Settings) -> None:
        values = {k: getattr(settings, k) for k in (*_KNOBS, "seed", "max_tokens")}
        values["preset"] = settings.sampling_preset
        self.set_values(values, settings.system_prompt)

    def sampling(self) -> Sampling:
        """The engine's Sampling; a "random" seed draws a fresh one per reply."""
        import os

        seed = self.seed.value()
        if seed < 0:
            seed = int.from_bytes(os.urandom(4), "little") >> 1
        return replace(Sampling(), seed=seed, **{k: getattr(self, k).value() for k in _KNOBS})

    # ---- events -------------------------------------------------------------------------
    def _on_preset_chosen(self, _index: int) -> None:
        name = self.preset.currentData()
        if self._updating or name == "custom":
            self._emit_changed()
            return
        preset = Sampling.preset(name)
        self._updating = True
        try:
            for knob in _KNOBS:
                getattr(self, knob).setValue(getattr(preset, knob))
        finally:
            self._updating = False
        self._emit_changed()

    def _on_knob_changed(self, _value: object) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            values = self.values()
            name = values["preset"]
            if name != "custom":
                preset = Sampling.preset(name)
                if any(abs(getattr(preset, k) - values[k]) > 1e-9 for k in _KNOBS):
                    self.preset.setCurrentIndex(self.preset.findData("custom"))
        finally:
            self._updating = False
        self._emit_changed()

    def _emit_changed(self) -> None:
        if not self._updating:
            self.changed.emit()

"""The Chat page's side and top bars: the conversation list, the model bar, the overflow banner.

:class:`ConversationSidebar` lists conversations (new, rename in place, delete after asking,
export and import; the same on a right-click), long titles elided with the whole title in the
tooltip.  :class:`OverflowBanner` asks what to do when a prompt will not fit.
:class:`ModelBar` picks the model, shows how it will load (auto fit, or context and GPU layers by
hand), its load status and the toggles that fold the side panels away; its picker elides the
model name (:class:`ElidingComboBox`).  They only report what the user asked for; the page does it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPoint, QSize, Qt, Signal
from PySide6.QtGui import QPaintEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QSpinBox,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionComboBox,
    QStyleOptionViewItem,
    QStylePainter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.chats import Conversation
from app.ui.dialogs import confirm
from app.ui.widgets.cards import PlainLabel, plain_tooltip

ID_ROLE = Qt.ItemDataRole.UserRole


class _NarrowItems(QStyledItemDelegate):
    """Items no wider than the list asks for: a long title is elided, never scrolled sideways."""

    def sizeHint(  # noqa: N802 - Qt's name
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        # A list item as wide as its text grew a horizontal scroll bar (issue 16).
        return QSize(60, super().sizeHint(option, index).height())


class ElidingComboBox(QComboBox):
    """A combo box that elides its current text with "…" (the whole text in the tooltip).

    Qt's combo box draws the current text clipped at its edge ("gemma-3-270m-Q"), which reads as
    a different model; this one draws what :meth:`shown_text` says.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self.base_tip = ""
        self.currentIndexChanged.connect(self._update_tip)

    def setToolTip(self, text: str) -> None:  # noqa: N802 - Qt's name
        self.base_tip = text
        self._update_tip()

    def _update_tip(self, _index: int = 0) -> None:
        current = self.currentText()
        tip = f"{current}\n{self.base_tip}" if current else self.base_tip
        super().setToolTip(plain_tooltip(tip))

    def _text_width(self) -> int:
        opt = QStyleOptionComboBox()
        self.initStyleOption(opt)
        rect = self.style().subControlRect(
            QStyle.ComplexControl.CC_ComboBox, opt, QStyle.SubControl.SC_ComboBoxEditField, self
        )
        return max(0, rect.width() - 4)

    def shown_text(self) -> str:
        """The current text as drawn: whole when it fits, else elided at the end."""
        return self.fontMetrics().elidedText(
            self.currentText(), Qt.TextElideMode.ElideRight, self._text_width()
        )

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QStylePainter(self)
        opt = QStyleOptionComboBox()
        self.initStyleOption(opt)
        opt.currentText = self.shown_text()
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, opt)
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, opt)


class ConversationSidebar(QWidget):
    """The conversations, most recent first.

    Signals:
        selected(int): the user picked a conversation (its id).
        renamed(int, str): the user edited a title in place.
        new_requested(): the New chat button.
        delete_requested(int): the user confirmed deleting a conversation.
        export_requested(): Export… (the page asks where).
        import_requested(): Import… (the page asks which file).
    """

    selected = Signal(int)
    renamed = Signal(int, str)
    new_requested = Signal()
    delete_requested = Signal(int)
    export_requested = Signal()
    import_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setObjectName("conversations")
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setItemDelegate(_NarrowItems(self.list))
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._exec_menu)
        self.list.itemSelectionChanged.connect(self._on_selection)
        self.list.itemChanged.connect(
            lambda item: self.renamed.emit(int(item.data(ID_ROLE)), item.text())
        )
        self.new_button = QPushButton("New chat")
        self.new_button.setToolTip("Start a new conversation (Ctrl+N)")
        self.new_button.clicked.connect(self.new_requested)
        self.rename_button = QPushButton("Rename")
        self.rename_button.clicked.connect(self._rename_current)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self._ask_delete_current)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip(
            "Save this chat as Markdown or JSON (JSON keeps every branch)"
        )
        self.export_button.clicked.connect(self.export_requested)
        self.import_button = QPushButton("Import…")
        self.import_button.setToolTip("Open a chat exported as JSON")
        self.import_button.clicked.connect(self.import_requested)
        self._current: int | None = None
        column = QVBoxLayout(self)
        column.setContentsMargins(8, 8, 4, 8)
        column.addWidget(self.new_button)
        column.addWidget(self.list, 1)
        row = QHBoxLayout()
        row.addWidget(self.rename_button)
        row.addWidget(self.delete_button)
        column.addLayout(row)
        files = QHBoxLayout()
        files.addWidget(self.export_button)
        files.addWidget(self.import_button)
        column.addLayout(files)

    def show_conversations(self, conversations: list[Conversation], current: int | None) -> None:
        """Fill the list (no selection signal while doing so)."""
        self._current = current
        self.list.blockSignals(True)
        self.list.clear()
        for conv in conversations:
            item = QListWidgetItem(conv.title)
            item.setData(ID_ROLE, conv.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            model = Path(conv.model_path).name if conv.model_path else "no model chosen"
            item.setToolTip(plain_tooltip(f"{conv.title}\n{model}"))
            self.list.addItem(item)
            if conv.id == current:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        self.rename_button.setEnabled(current is not None)
        self.delete_button.setEnabled(current is not None)
        self.export_button.setEnabled(current is not None)

    def first_id(self) -> int | None:
        item = self.list.item(0)
        return int(item.data(ID_ROLE)) if item is not None else None

    def titles(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def _on_selection(self) -> None:
        items = self.list.selectedItems()
        if items and int(items[0].data(ID_ROLE)) != self._current:
            self.selected.emit(int(items[0].data(ID_ROLE)))

    def context_menu(self, row: int) -> QMenu | None:
        """The right-click menu of the conversation at ``row`` (None when there is none)."""
        item = self.list.item(row)
        if item is None:
            return None
        menu = QMenu(self)
        menu.addAction("Rename", lambda: self._act(item, self._rename_current))
        menu.addAction("Export…", lambda: self._act(item, self.export_requested.emit))
        menu.addSeparator()
        menu.addAction("Delete…", lambda: self._act(item, self._ask_delete_current))
        return menu

    def _act(self, item: QListWidgetItem, action: Callable[[], object]) -> None:
        # The actions work on the current conversation: the clicked one becomes it first.
        self.list.setCurrentItem(item)
        action()

    def _exec_menu(self, pos: QPoint) -> None:
        item = self.list.itemAt(pos)
        menu = self.context_menu(self.list.row(item)) if item is not None else None
        if menu is not None:
            menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)  # one per right-click
            menu.exec(self.list.viewport().mapToGlobal(pos))

    def _rename_current(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.list.editItem(item)

    def _ask_delete_current(self) -> None:
        item = self.list.currentItem()
        if item is None:
            return
        if confirm(self, "Delete conversation", f"Delete “{item.text()}” and all its messages?"):
            self.delete_requested.emit(int(item.data(ID_ROLE)))


class ModelBar(QWidget):
    """Model picker, load options (auto fit or by hand), Load/Eject, and the load status.

    Signals:
        model_picked(str): the user chose a model (from the list or a file).
        load_requested(): Load.
        eject_requested(): Eject.
    """

    model_picked = Signal(str)
    load_requested = Signal()
    eject_requested = Signal()

    def __init__(self, default_ctx: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.picker = ElidingComboBox()
        self.picker.setMinimumWidth(110)
        self.picker.setToolTip("The model to chat with (from the library, or Browse…)")
        self.picker.activated.connect(self._on_picked)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self._browse)
        self.auto_fit = QCheckBox("Auto fit")
        self.auto_fit.setChecked(True)
        self.auto_fit.setToolTip("Choose GPU layers and context from this machine's memory plan")
        self.ctx_box = QSpinBox()
        self.ctx_box.setRange(256, 1 << 20)
        self.ctx_box.setSingleStep(1024)
        self.ctx_box.setPrefix("ctx ")
        self.ctx_box.setValue(default_ctx)
        self.gpu_box = QSpinBox()
        self.gpu_box.setRange(0, 1000)
        self.gpu_box.setPrefix("GPU layers ")
        self.load_button = QPushButton("Load")
        self.load_button.setObjectName("primary")
        self.load_button.clicked.connect(self.load_requested)
        self.eject_button = QPushButton("Eject")
        self.eject_button.setToolTip("Unload the model and stop its engine process")
        self.eject_button.clicked.connect(self.eject_requested)
        self.status = PlainLabel("No model loaded", name="muted")
        self.status.setWordWrap(True)  # long file names must not widen the window
        # Fold the side panels away: the conversation list and the options.
        self.chats_toggle = self._toggle("Chats", "Show or hide the conversation list")
        self.options_toggle = self._toggle(
            "Options", "Show or hide the prompt and sampling options"
        )
        self._busy = False
        self._loaded = False
        self.auto_fit.toggled.connect(lambda _on: self.set_busy(self._busy, self._loaded))

        top = QHBoxLayout()
        top.addWidget(self.chats_toggle)
        top.addWidget(self.picker, 1)
        for w in (self.browse_button, self.load_button, self.eject_button, self.options_toggle):
            top.addWidget(w)
        fit_row = QHBoxLayout()
        for knob in (self.auto_fit, self.ctx_box, self.gpu_box):
            fit_row.addWidget(knob)
        fit_row.addStretch(1)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(top)
        column.addLayout(fit_row)
        # On a line of its own: beside the knobs it wrapped into a narrow column.
        column.addWidget(self.status)

    def _toggle(self, text: str, tip: str) -> QToolButton:
        button = QToolButton()
        button.setText(text)
        button.setToolTip(tip)
        button.setCheckable(True)
        button.setChecked(True)
        return button

    def selected_model(self) -> str | None:
        path = self.picker.currentData()
        return str(path) if path else None

    def set_models(self, choices: list[tuple[str, str]]) -> None:
        """Fill the picker with (label, path), keeping the current choice."""
        current = self.selected_model()
        self.picker.blockSignals(True)
        self.picker.clear()
        for label, path in choices:
            self.picker.addItem(label, path)
        if self.picker.count() == 0:
            self.picker.addItem("No models yet: download one or Browse…", None)
        if current:
            self.select_model(current)
        self.picker.blockSignals(False)

    def select_model(self, path: str) -> None:
        index = self.picker.findData(path)
        if index < 0:
            if self.picker.count() == 1 and self.picker.itemData(0) is None:
                self.picker.clear()
            self.picker.addItem(Path(path).name, path)
            index = self.picker.count() - 1
        self.picker.setCurrentIndex(index)

    def set_busy(self, busy: bool, loaded: bool) -> None:
        self._busy, self._loaded = busy, loaded
        for w in (self.picker, self.browse_button, self.load_button, self.auto_fit):
            w.setEnabled(not busy)
        manual = not self.auto_fit.isChecked()
        self.ctx_box.setEnabled(not busy and manual)
        self.gpu_box.setEnabled(not busy and manual)
        self.eject_button.setEnabled(not busy and loaded)

    def _on_picked(self, _index: int) -> None:
        path = self.selected_model()
        if path:
            self.model_picked.emit(path)

    def _browse(self) -> None:
        start = str(Path(self.selected_model() or Path.home()).parent)
        path, _ = QFileDialog.getOpenFileName(self, "Open a GGUF model", start, "GGUF (*.gguf)")
        if path:
            self.model_picked.emit(path)


class OverflowBanner(QFrame):
    """Shown when the next prompt will not fit the context: leave out old turns, or a new chat.

    Signals:
        drop_requested(): send, leaving out the oldest turns (remembered for the chat).
        new_chat_requested(): start a new chat with the message.
        dismissed(): neither (the message stays in the chat).
    """

    drop_requested = Signal()
    new_chat_requested = Signal()
    dismissed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("overflowBanner")
        self.setStyleSheet(
            "#overflowBanner { background: rgba(230,160,40,0.16); border-radius: 6px; }"
        )
        self.text = PlainLabel("")
        self.text.setWordWrap(True)
        self.drop_button = QPushButton("Leave out the oldest turns")
        self.drop_button.setToolTip(
            "Send only the latest turns that fit, as llama.cpp's context shift does; "
            "the whole chat stays here"
        )
        self.drop_button.clicked.connect(self.drop_requested)
        self.new_button = QPushButton("New chat with this message")
        self.new_button.clicked.connect(self.new_chat_requested)
        self.close_button = QPushButton("Cancel")
        self.close_button.clicked.connect(self.dismissed)
        buttons = QHBoxLayout()
        buttons.addWidget(self.drop_button)
        buttons.addWidget(self.new_button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        column = QVBoxLayout(self)
        column.setContentsMargins(10, 8, 10, 8)
        column.addWidget(self.text)
        column.addLayout(buttons)
        self.hide()

    def show_overflow(self, prompt_tokens: int, n_ctx: int, reserve: int) -> None:
        self.text.setText(
            f"This conversation is about {prompt_tokens} tokens, and the model's context holds "
            f"{n_ctx} (keeping {reserve} for the reply): it does not fit, so nothing was sent. "
            "Leave out the oldest turns, start a new chat, or load the model with a larger "
            "context."
        )
        self.show()

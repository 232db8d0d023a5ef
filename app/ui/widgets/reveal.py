"""Open a folder in the system's file manager, or say where it is when there is none.

``QDesktopServices.openUrl`` returns False without a file manager (a bare window manager, a
container, the offscreen platform): the user then gets a small window with the path, selectable,
and a Copy button -- a click never does nothing.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.ui.widgets.cards import PlainLabel


class PathDialog(QDialog):
    """Shows a path that could not be opened, with a button that copies it."""

    def __init__(self, path: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Folder")
        self.path = path
        column = QVBoxLayout(self)
        column.addWidget(PlainLabel("No file manager could open this folder. It is here:"))
        row = QHBoxLayout()
        self.field = QLineEdit(str(path))
        self.field.setReadOnly(True)
        self.field.setMinimumWidth(360)
        row.addWidget(self.field, 1)
        self.copy_button = QPushButton("Copy path")
        self.copy_button.clicked.connect(self.copy)
        row.addWidget(self.copy_button)
        column.addLayout(row)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        column.addWidget(close)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(str(self.path))
        self.copy_button.setText("Copied")


def copy_text(text: str) -> None:
    """Put ``text`` on the clipboard."""
    QGuiApplication.clipboard().setText(text)


def reveal(folder: Path, parent: QWidget | None = None) -> PathDialog | None:
    """Open ``folder`` in the file manager; when none opens it, show (and return) a PathDialog."""
    if QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
        return None
    dialog = PathDialog(folder, parent)
    dialog.setModal(False)
    dialog.show()
    return dialog

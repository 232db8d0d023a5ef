"""The About dialog: versions of QuantDesk, llama.cpp (llama-cpp-python), Qt and Python.

The llama.cpp version is read from the installed package metadata: the GUI process never imports
llama_cpp (it lives only in the engine process, see DESIGN.md section 3).
"""

from __future__ import annotations

import platform
from importlib import metadata

import PySide6
from PySide6.QtCore import Qt, qVersion
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

import app
from app.core import paths
from app.ui.widgets.cards import PlainLabel, muted
from app.ui.widgets.icon import app_icon


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """Name -> version of everything a bug report needs."""
    return {
        "QuantDesk": app.__version__,
        "llama.cpp (llama-cpp-python)": _dist_version("llama-cpp-python"),
        "Qt": qVersion(),
        "PySide6": PySide6.__version__,
        "huggingface_hub": _dist_version("huggingface_hub"),
        "Python": platform.python_version(),
        "System": f"{platform.system()} {platform.release()} ({platform.machine()})",
    }


class AboutDialog(QDialog):
    """Icon, name, tagline, a table of versions, and where the user's data lives."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"About {app.APP_NAME}")
        layout = QVBoxLayout(self)
        layout.setSpacing(10)
        head = QHBoxLayout()
        logo = QLabel()
        logo.setPixmap(app_icon().pixmap(64, 64))
        head.addWidget(logo, 0, Qt.AlignmentFlag.AlignTop)
        title = QVBoxLayout()
        title.addWidget(PlainLabel(f"{app.APP_NAME} {app.__version__}", name="pageTitle"))
        title.addWidget(
            muted(
                "Run GGUF language models locally: an honest fit before you "
                "download, verified files, and measured quant quality."
            )
        )
        head.addLayout(title, 1)
        layout.addLayout(head)
        form = QFormLayout()
        self.version_labels: dict[str, QLabel] = {}
        for name, version in versions().items():
            value = PlainLabel(version)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            form.addRow(f"{name}:", value)
            self.version_labels[name] = value
        data = PlainLabel(str(paths.data_dir()))
        data.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("Your data:", data)
        layout.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.setMinimumWidth(460)

"""The main window: one window with a sidebar of pages."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QMainWindow, QVBoxLayout, QWidget

import app


class MainWindow(QMainWindow):
    """QuantDesk's main window."""

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle(f"{app.APP_NAME} {app.__version__}")
        self.resize(1280, 800)
        central = QWidget()
        layout = QVBoxLayout(central)
        title = QLabel(f"<h1>{app.APP_NAME}</h1><p>version {app.__version__}</p>")
        layout.addWidget(title)
        self.setCentralWidget(central)

"""Building blocks every page uses: plain-text labels, page headers, cards, banners, chips.

Text that comes from outside (model names, Hub descriptions, error messages) goes through
:class:`PlainLabel`, which never interprets HTML: QLabel's default "auto" format would render
anything that looks like markup.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


class PlainLabel(QLabel):
    """A QLabel that always shows its text literally (no rich text, no links)."""

    def __init__(self, text: str = "", parent: QWidget | None = None, *, name: str = "") -> None:
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setText(text)
        if name:
            self.setObjectName(name)


def plain_tooltip(text: str) -> str:
    """A tooltip that shows ``text`` literally: Qt renders tooltips that look like HTML as HTML,
    so outside text is escaped inside an explicit rich-text paragraph."""
    return "<p style='white-space:pre-wrap'>" + html.escape(text) + "</p>" if text else ""


def muted(text: str = "", wrap: bool = True) -> PlainLabel:
    label = PlainLabel(text, name="muted")
    label.setWordWrap(wrap)
    return label


class PageHeader(QWidget):
    """Title and subtitle on the left, action buttons on the right."""

    def __init__(self, title: str, subtitle: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 4)
        text = QVBoxLayout()
        text.setSpacing(2)
        self.title = PlainLabel(title, name="pageTitle")
        self.subtitle = PlainLabel(subtitle, name="pageSubtitle")
        self.subtitle.setWordWrap(True)
        text.addWidget(self.title)
        if subtitle:
            text.addWidget(self.subtitle)
        layout.addLayout(text, 1)
        self.action_row = QHBoxLayout()
        layout.addLayout(self.action_row)

    def add_action(self, button: QPushButton) -> QPushButton:
        self.action_row.addWidget(button)
        return button


class Card(QFrame):
    """A rounded panel with an optional title; put content in :attr:`body`."""

    def __init__(self, title: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("card")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(14, 12, 14, 12)
        outer.setSpacing(8)
        self.title_label = PlainLabel(title, name="cardTitle")
        if title:
            outer.addWidget(self.title_label)
        self.body = QVBoxLayout()
        self.body.setSpacing(6)
        outer.addLayout(self.body)
        outer.addStretch(1)  # cards side by side share a height: keep content at the top

    def add(self, item: QWidget | QLayout) -> None:
        if isinstance(item, QLayout):
            self.body.addLayout(item)
        else:
            self.body.addWidget(item)


class Banner(QFrame):
    """A warning or error box: a headline, details, and optionally a command to copy."""

    def __init__(
        self,
        headline: str,
        detail: str = "",
        kind: str = "warning",
        command: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("error" if kind == "error" else "warning")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        head = PlainLabel(headline, name="cardTitle")
        head.setWordWrap(True)
        layout.addWidget(head)
        self.headline = head
        if detail:
            body = PlainLabel(detail)
            body.setWordWrap(True)
            body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            layout.addWidget(body)
        if command:
            cmd = PlainLabel(command)
            cmd.setWordWrap(True)
            cmd.setStyleSheet("font-family: monospace;")
            cmd.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            layout.addWidget(cmd)
            self.command = cmd


def chip(text: str) -> PlainLabel:
    """A small rounded tag (CPU features, backends)."""
    label = PlainLabel(text, name="chip")
    return label


def flow_row(widgets: list[QWidget], per_row: int = 8) -> QVBoxLayout:
    """Lay chips out in rows of ``per_row`` (enough for feature lists; no reflow needed)."""
    column = QVBoxLayout()
    column.setSpacing(4)
    for start in range(0, len(widgets), per_row):
        row = QHBoxLayout()
        row.setSpacing(4)
        for w in widgets[start : start + per_row]:
            row.addWidget(w)
        row.addStretch(1)
        column.addLayout(row)
    return column

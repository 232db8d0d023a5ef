"""A list delegate that paints two lines per item: a bold title and a muted subtitle.

Items carry the title as their display text and the subtitle in :data:`SUBTITLE_ROLE`; both are
drawn as plain text.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QFontMetrics, QPainter, QPalette
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

SUBTITLE_ROLE = Qt.ItemDataRole.UserRole + 2


class TwoLineDelegate(QStyledItemDelegate):
    """Title on the first line, ``SUBTITLE_ROLE`` text (elided) on the second."""

    PAD = 6

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        title = opt.text
        opt.text = ""
        widget = option.widget
        if widget is not None:
            widget.style().drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        pal = option.palette
        main = pal.color(
            QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        )
        sub = main if selected else pal.color(QPalette.ColorRole.PlaceholderText)
        rect = option.rect.adjusted(self.PAD + 2, self.PAD, -self.PAD, -self.PAD)
        bold = QFontMetrics(option.font)
        line = bold.height()
        painter.save()
        font = option.font
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(main)
        elided = QFontMetrics(font).elidedText(title, Qt.TextElideMode.ElideRight, rect.width())
        painter.drawText(QRect(rect.left(), rect.top(), rect.width(), line), 0, elided)
        subtitle = index.data(SUBTITLE_ROLE) or ""
        font.setBold(False)
        painter.setFont(font)
        painter.setPen(sub)
        elided = bold.elidedText(str(subtitle), Qt.TextElideMode.ElideRight, rect.width())
        painter.drawText(QRect(rect.left(), rect.top() + line + 2, rect.width(), line), 0, elided)
        painter.restore()

    def sizeHint(  # noqa: N802 - Qt's name
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        line = QFontMetrics(option.font).height()
        # Narrow on purpose: wider than the list it would add a horizontal scroll bar and cut
        # the titles instead of eliding them.
        return QSize(80, line * 2 + 2 + self.PAD * 2)

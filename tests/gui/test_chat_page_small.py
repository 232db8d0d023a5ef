"""The Chat page as issue 16 found it, on real widgets: usable at 900x600 (the model name elided
with a tooltip, stats on one line, side panels that fold away), no stale stats in a new chat, a
chat list that elides long titles instead of scrolling sideways, right-click menus on messages
and conversations, and a reply's measured speed kept for the recommendation rule."""

from __future__ import annotations

import shutil

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QPushButton, QScrollArea, QToolButton

from app.core import speed
from app.core.chats import ChatStore

LONG_MODEL = "gemma-3-270m-it-a-rather-long-model-file-name-Q4_K_M.gguf"


def _chat(win, model, ctx: int = 512):
    page = win.show_page("Chat")
    page.auto_fit.setChecked(False)
    page.ctx_box.setValue(ctx)
    page.gpu_box.setValue(0)
    page.choose_model(model, load=False)
    return page


def _reply(qtbot, page, text: str = "Hello there", max_tokens: int = 8) -> None:
    page.options.max_tokens.setValue(max_tokens)
    page.options.seed.setValue(7)
    page.composer.setPlainText(text)
    qtbot.keyClick(page.composer, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not page.busy and page.view.streaming is None, timeout=60_000)


def _actions(menu) -> dict[str, object]:
    return {a.text(): a for a in menu.actions() if a.text()}


def _one_line(label) -> bool:
    return label.height() < 2 * label.fontMetrics().height()


@pytest.fixture
def long_model(tmp_path, tiny_models):
    path = tmp_path / LONG_MODEL
    shutil.copyfile(tiny_models["Q4_K_M"], path)
    return path


@pytest.mark.parametrize("size", [(900, 600), (1920, 1080)])
def test_chat_takes_the_window_size_and_keeps_names_and_stats_readable(
    window, qtbot, long_model, size
):
    page = _chat(window, long_model)
    page.speed_label.setText("123 tokens · 14 thinking · 31.0 tok/s · first token 120 ms · stopped")
    window.resize(*size)
    QApplication.processEvents()
    assert (window.width(), window.height()) == size
    for area in page.findChildren(QScrollArea):
        assert not area.horizontalScrollBar().isVisible(), area
    for button in page.findChildren(QPushButton):
        if button.isVisibleTo(page) and button.text():
            assert button.width() >= button.minimumSizeHint().width(), button.text()
    # The name reads whole or elided with "…", never cut mid-word; the tooltip has all of it.
    shown = page.model_picker.shown_text()
    assert shown == page.model_picker.currentText() or shown.endswith("…")
    assert page.model_picker.fontMetrics().horizontalAdvance(shown) <= page.model_picker.width()
    assert LONG_MODEL in page.model_picker.toolTip()
    # Stats on one line, the whole text in the tooltip.
    assert _one_line(page.speed_label)
    assert "first token 120 ms" in page.speed_label.toolTip()
    # The chat view keeps a usable width.
    assert page.view.width() >= 380


def test_side_panels_fold_away_and_come_back(window, qtbot):
    page = window.show_page("Chat")
    window.resize(1920, 1080)
    QApplication.processEvents()
    assert page.sidebar.isVisible() and page.options_panel.isVisible()
    wide_view = page.view.width()
    page.chats_toggle.click()
    page.options_toggle.click()
    QApplication.processEvents()
    assert not page.sidebar.isVisible() and not page.options_panel.isVisible()
    assert page.view.width() > wide_view
    page.chats_toggle.click()
    QApplication.processEvents()
    assert page.sidebar.isVisible() and page.chats_toggle.isChecked()
    # A small window folds the options away by itself; the toggle brings them back.
    page.options_toggle.click()
    window.resize(900, 600)
    QApplication.processEvents()
    assert not page.options_panel.isVisible() and not page.options_toggle.isChecked()
    page.options_toggle.click()
    QApplication.processEvents()
    # Opened in a small window, the options take the list's place: the chat keeps its minimum.
    assert page.options_panel.isVisible() and not page.sidebar.isVisible()
    assert page._splitter.width() >= page._splitter.minimumSizeHint().width()
    assert page.view.width() >= 380
    assert isinstance(page.chats_toggle, QToolButton)


def test_message_stats_stay_on_one_line_in_a_narrow_window(window, qtbot, tiny_models):
    page = _chat(window, tiny_models["Q8_0"])
    window.resize(900, 600)
    _reply(qtbot, page)
    reply = page.view.messages[-1]
    reply.set_stats("123 tokens · 14 thinking · 31.0 tok/s · first token 120 ms · stopped")
    QApplication.processEvents()
    assert _one_line(reply.stats_label)
    assert "stopped" in reply.stats_label.toolTip()


def test_a_new_chat_does_not_show_the_previous_chats_stats(window, qtbot, tiny_models):
    page = _chat(window, tiny_models["Q8_0"])
    _reply(qtbot, page)
    assert "tok/s" in page.speed_label.text()
    assert page.context_bar.value() > 0
    first = page.conversation.id
    page.new_chat()
    assert page.speed_label.text() == ""
    assert page.context_bar.value() == 0
    page.open_conversation(first)  # its own last stats come back with it
    assert "tok/s" in page.speed_label.text()


def test_long_chat_titles_elide_instead_of_scrolling_sideways(window, qtbot):
    page = window.show_page("Chat")
    title = "A very long conversation title " * 6
    conv = page.store.create()
    page.rename_conversation(conv.id, title.strip())
    window.resize(900, 600)
    QApplication.processEvents()
    lst = page.conversation_list
    assert lst.count() == 1
    assert not lst.horizontalScrollBar().isVisible()
    assert lst.visualItemRect(lst.item(0)).right() <= lst.viewport().width()
    assert title.strip() in lst.item(0).toolTip()


def test_message_menu_copies_edits_regenerates_and_deletes(window, qtbot, tiny_models, monkeypatch):
    page = _chat(window, tiny_models["Q8_0"])
    _reply(qtbot, page, "Say **hi**")
    user, reply = page.view.messages
    u = _actions(page.view.context_menu(user))
    assert list(u) == ["Copy text", "Copy as Markdown", "Edit", "Delete…"]
    u["Copy as Markdown"].trigger()
    assert QApplication.clipboard().text() == "Say **hi**"
    r = _actions(page.view.context_menu(reply))
    assert list(r) == ["Copy text", "Copy as Markdown", "Regenerate", "Delete…"]
    r["Copy text"].trigger()
    assert QApplication.clipboard().text() == reply.plain_text()
    u["Edit"].trigger()
    assert page.composer.toPlainText() == "Say **hi**" and page._editing_id == user.message_id
    page._cancel_edit()
    r["Regenerate"].trigger()
    qtbot.waitUntil(lambda: not page.busy and page.view.streaming is None, timeout=60_000)
    assert len(page.store.alternatives(page.conversation.id)[user.message_id]) == 2
    from app.ui.pages.chat import view as chat_view

    monkeypatch.setattr(chat_view, "confirm", lambda *_a: True)  # the Yes of the dialog
    last = page.view.messages[-1]
    _actions(page.view.context_menu(last))["Delete…"].trigger()
    assert [m.role for m in page.view.messages] == ["user", "assistant"]  # the other reply
    assert len(page.store.alternatives(page.conversation.id)[user.message_id]) == 1
    _actions(page.view.context_menu(page.view.messages[0]))["Delete…"].trigger()
    assert page.view.messages == [] and page.store.messages(page.conversation.id) == []


def test_conversation_menu_renames_exports_and_deletes(window, qtbot, tmp_path, monkeypatch):
    page = window.show_page("Chat")
    conv = page.store.create()
    page.store.add_message(conv.id, "user", "Hello")
    page.refresh_conversations()
    page.open_conversation(conv.id)
    assert page.sidebar.context_menu(5) is None  # no such row
    actions = _actions(page.sidebar.context_menu(0))
    assert list(actions) == ["Rename", "Export…", "Delete…"]
    actions["Rename"].trigger()
    assert page.conversation_list.isPersistentEditorOpen(page.conversation_list.item(0)) or (
        page.conversation_list.state() == page.conversation_list.State.EditingState
    )
    from PySide6.QtWidgets import QFileDialog

    target = tmp_path / "chat.md"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *_a, **_k: (str(target), ""))
    actions["Export…"].trigger()
    assert "Hello" in target.read_text(encoding="utf-8")
    from app.ui.pages.chat import bars

    monkeypatch.setattr(bars, "confirm", lambda *_a: True)
    _actions(page.sidebar.context_menu(0))["Delete…"].trigger()
    assert conv.id not in [c.id for c in ChatStore().conversations()]


def test_a_reply_records_its_measured_speed(window, qtbot, tiny_models):
    model = tiny_models["Q8_0"]
    assert speed.measured_speed(model) is None
    page = _chat(window, model)
    _reply(qtbot, page, max_tokens=12)
    stats = page.store.messages(page.conversation.id)[-1].stats
    assert stats and stats["gen_tok_s"] > 0
    assert speed.measured_speed(model) == pytest.approx(stats["gen_tok_s"])


def test_right_click_on_a_message_text_opens_the_message_menu(window, qtbot):
    from PySide6.QtCore import QPoint, QTimer
    from PySide6.QtGui import QContextMenuEvent

    page = window.show_page("Chat")
    conv = page.store.create()
    page.store.add_message(conv.id, "user", "Hello")
    page.open_conversation(conv.id)
    body = page.view.messages[0].stable
    shown: list[list[str]] = []

    def close_menu() -> None:
        menu = QApplication.activePopupWidget()
        if menu is not None:
            shown.append([a.text() for a in menu.actions() if a.text()])
            menu.close()

    QTimer.singleShot(300, close_menu)
    QTimer.singleShot(3000, close_menu)  # bounded even if the first one came too early
    event = QContextMenuEvent(
        QContextMenuEvent.Reason.Mouse, QPoint(5, 5), body.mapToGlobal(QPoint(5, 5))
    )
    QApplication.sendEvent(body.viewport(), event)  # the text area's own menu must not win
    assert shown and shown[0] == ["Copy text", "Copy as Markdown", "Edit", "Delete…"]

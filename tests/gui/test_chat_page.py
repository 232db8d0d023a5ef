"""The Chat page on a real engine child with generated models and a real SQLite file."""

from __future__ import annotations

import os
import signal

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from app.core.chats import ChatStore
from app.ui.main_window import MainWindow


def _chat(win: MainWindow, model, ctx: int = 512):
    page = win.show_page("Chat")
    page.auto_fit.setChecked(False)
    page.ctx_box.setValue(ctx)
    page.gpu_box.setValue(0)
    page.choose_model(model, load=False)
    return page


def _send(qtbot, page, text: str, max_tokens: int = 12) -> None:
    page.options.max_tokens.setValue(max_tokens)
    page.options.seed.setValue(7)
    page.composer.setPlainText(text)
    qtbot.keyClick(page.composer, Qt.Key.Key_Return)


def _idle(qtbot, page, timeout: int = 60000) -> None:
    qtbot.waitUntil(lambda: not page.busy and page.view.streaming is None, timeout=timeout)


def _roles(page) -> list[str]:
    return [m.role for m in page.view.messages]


def test_conversation_persists_across_close_and_reopen(make_window, qtbot, tiny_models):
    win = make_window()
    page = _chat(win, tiny_models["Q8_0"])
    _send(qtbot, page, "Hello there, model")
    _idle(qtbot, page)
    assert _roles(page) == ["user", "assistant"]
    reply = page.view.messages[1].text
    assert reply
    first_id = page.conversation.id
    page.new_chat()
    page.rename_conversation(page.conversation.id, "Second one")
    win.close()
    assert not page.engine.alive

    win2 = make_window()
    page2 = win2.show_page("Chat")
    titles = [
        page2.conversation_list.item(i).text() for i in range(page2.conversation_list.count())
    ]
    assert titles == ["Second one", "Hello there, model"]
    page2.open_conversation(first_id)
    assert [(m.role, m.text) for m in page2.view.messages] == [
        ("user", "Hello there, model"),
        ("assistant", reply),
    ]
    assert "tokens" in page2.view.messages[1].stats_label.text()
    page2.delete_conversation(first_id)
    assert [c.title for c in ChatStore().conversations()] == ["Second one"]


def test_reply_streams_token_by_token_and_escape_stops_it(make_window, qtbot, tiny_models):
    win = make_window()
    page = _chat(win, tiny_models["Q4_K_M"], ctx=2048)
    page.ignore_eos = True
    seen: list[int] = []
    page.view.rendered.connect(
        lambda: seen.append(len(page.view.streaming.text)) if page.view.streaming else None
    )
    _send(qtbot, page, "Tell me a long story", max_tokens=1500)
    # several renders while the reply is still running: it appears as it is written
    qtbot.waitUntil(lambda: page.generating and len(seen) >= 3, timeout=60000)
    assert page.stop_button.isEnabled() and not page.send_button.isEnabled()
    qtbot.keyClick(page.composer, Qt.Key.Key_Escape)
    _idle(qtbot, page)
    # The view showed the reply growing, piece by piece, before it ended.
    assert seen == sorted(seen) and 0 < seen[0] < seen[-1]
    [_user, reply] = page.view.messages
    stats = ChatStore().messages(page.conversation.id)[1].stats
    assert stats["stop_reason"] == "cancelled" and stats["tokens"] < 1500
    assert "stopped" in reply.stats_label.text()
    assert page.context_bar.value() == stats["prompt_tokens"] + stats["tokens"]
    assert page.context_bar.maximum() == 2048
    # the engine is still loaded and answers again
    page.ignore_eos = False
    _send(qtbot, page, "again", max_tokens=4)
    _idle(qtbot, page)
    assert _roles(page) == ["user", "assistant", "user", "assistant"]


def test_engine_crash_shows_in_conversation_and_next_reply_works(make_window, qtbot, tiny_models):
    win = make_window()
    page = _chat(win, tiny_models["Q8_0"], ctx=1024)
    page.ignore_eos = True
    _send(qtbot, page, "Say a lot", max_tokens=1000)
    qtbot.waitUntil(lambda: page._reply_pieces >= 3, timeout=60000)
    os.kill(page.engine.pid, signal.SIGKILL)
    _idle(qtbot, page)
    assert _roles(page)[-1] == "error"
    assert "SIGKILL" in page.view.messages[-1].text
    assert page.loaded is None and not page.engine.alive
    stored = ChatStore().messages(page.conversation.id)
    assert stored[-1].role == "error"
    # A fresh send loads the model in a new engine process and replies.
    page.ignore_eos = False
    _send(qtbot, page, "Are you back?", max_tokens=4)
    _idle(qtbot, page)
    assert _roles(page)[-2:] == ["user", "assistant"]
    assert page.loaded is not None and page.engine.alive
    # The error is shown but never sent to the model as part of the chat.
    assert "error" not in [m["role"] for m in page_messages(page)]


def page_messages(page):
    from app.core.chats import engine_messages

    return engine_messages("", ChatStore().messages(page.conversation.id))


def test_abort_inside_llama_cpp_while_idle_then_reload(make_window, qtbot, tiny_models):
    from app.core.engine import EngineCrashed

    win = make_window()
    page = _chat(win, tiny_models["Q4_0"])
    page.load_model()
    qtbot.waitUntil(lambda: page.loaded is not None and not page.busy, timeout=60000)
    with pytest.raises(EngineCrashed):
        page.engine.debug_crash("abort")
    _send(qtbot, page, "hello", max_tokens=3)
    _idle(qtbot, page)
    assert _roles(page) == ["user", "assistant"]
    # Eject stops the engine process off the GUI thread; the next message loads again.
    assert page.model_bar.eject_button.isEnabled()
    pid = page.engine.pid
    page.model_bar.eject_button.click()
    qtbot.waitUntil(lambda: not page.busy and not page.engine.alive, timeout=30000)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert page.loaded is None and not page.model_bar.eject_button.isEnabled()


def test_bad_model_file_shows_an_error_and_page_keeps_working(
    make_window, qtbot, tiny_models, tmp_path
):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"PK\x03\x04 not a model" * 50)
    win = make_window()
    page = _chat(win, bad)
    _send(qtbot, page, "hello?")
    _idle(qtbot, page)
    assert _roles(page) == ["user", "error"]
    assert "broken.gguf" in page.view.messages[-1].text
    page.choose_model(tiny_models["Q4_0"], load=False)
    page.regenerate(page.view.messages[-1].message_id)
    _idle(qtbot, page)
    assert _roles(page) == ["user", "assistant"]


def test_regenerate_and_edit_and_resend(make_window, qtbot, tiny_models):
    win = make_window()
    page = _chat(win, tiny_models["Q8_0"])
    page.options.temperature.setValue(1.0)
    page.options.seed.setValue(-1)
    _send(qtbot, page, "first question", max_tokens=8)
    page.options.seed.setValue(-1)
    _idle(qtbot, page)
    last = page.view.messages[-1]
    assert last.regenerate_button.isVisibleTo(page)
    old_id = last.message_id
    last.regenerate_button.click()
    _idle(qtbot, page)
    assert _roles(page) == ["user", "assistant"]
    assert page.view.messages[-1].message_id != old_id
    user = page.view.messages[0]
    assert user.edit_button.isVisibleTo(page)
    user.edit_button.click()
    assert page.composer.toPlainText() == "first question"
    page.composer.setPlainText("edited question")
    qtbot.keyClick(page.composer, Qt.Key.Key_Return)
    _idle(qtbot, page)
    stored = ChatStore().messages(page.conversation.id)
    assert [(m.role, m.content) for m in stored][0] == ("user", "edited question")
    assert [m.role for m in stored] == ["user", "assistant"]


def test_enter_sends_shift_enter_adds_a_line_ctrl_n_starts_a_chat(make_window, qtbot):
    win = make_window()
    page = win.show_page("Chat")
    page.composer.setFocus()
    qtbot.keyClicks(page.composer, "line one")
    qtbot.keyClick(page.composer, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(page.composer, "line two")
    assert page.composer.toPlainText() == "line one\nline two"
    # No model chosen: Enter sends, and the conversation says what is missing.
    qtbot.keyClick(page.composer, Qt.Key.Key_Return)
    assert page.composer.toPlainText() == ""
    assert _roles(page) == ["user", "error"]
    assert "Choose a model" in page.view.messages[-1].text
    first = page.conversation.id
    qtbot.keyClick(win, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert page.conversation.id != first and page.view.messages == []
    qtbot.keyClick(win, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert len(ChatStore().conversations()) == 2  # an empty chat is reused, not duplicated


def test_closing_the_window_mid_reply_stops_the_engine(make_window, qtbot, tiny_models):
    win = make_window()
    page = _chat(win, tiny_models["Q4_K_M"], ctx=2048)
    page.ignore_eos = True
    _send(qtbot, page, "Keep going", max_tokens=1500)
    qtbot.waitUntil(lambda: page._reply_pieces >= 3, timeout=60000)
    pid = page.engine.pid
    win.close()
    assert not page.engine.alive
    assert not win.context.runner.active
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # what was written before the window closed is kept
    stored = ChatStore().messages(page.conversation.id)
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[1].content and stored[1].stats["stop_reason"] == "cancelled"


def test_auto_fit_plans_and_loads(make_window, qtbot, tiny_models):
    win = make_window()
    page = win.show_page("Chat")
    page.settings.default_n_ctx = 1024
    assert page.auto_fit.isChecked()
    page.choose_model(tiny_models["Q4_0"])
    qtbot.waitUntil(lambda: page.loaded is not None, timeout=60000)
    assert page.loaded.n_ctx == 1024 and page.loaded.n_gpu_layers == 0
    assert page.ctx_box.value() == 1024
    assert "Fit plan" in page.load_status.toolTip()
    assert "context 1024" in page.load_status.text()


def test_presets_knobs_and_system_prompt_are_kept_per_conversation(make_window, qtbot):
    from app.core.engine.protocol import Sampling

    win = make_window()
    page = win.show_page("Chat")
    page.new_chat()
    opts = page.options
    opts.preset.setCurrentIndex(opts.preset.findData("precise"))
    assert opts.temperature.value() == Sampling.preset("precise").temperature
    opts.top_k.setValue(7)  # a knob by hand: the preset becomes "custom"
    assert opts.preset.currentData() == "custom"
    opts.system_prompt.setPlainText("Answer in French.")
    first = page.conversation.id
    page.store.add_message(first, "user", "x")  # so Ctrl+N does not reuse it
    page.new_chat()
    assert opts.preset.currentData() == "balanced" and opts.system_prompt.toPlainText() == ""
    page.open_conversation(first)
    assert opts.preset.currentData() == "custom" and opts.top_k.value() == 7
    assert opts.system_prompt.toPlainText() == "Answer in French."
    sampling = opts.sampling()
    assert sampling.top_k == 7 and sampling.temperature == Sampling.preset("precise").temperature


def test_copy_puts_the_message_on_the_clipboard(make_window, qtbot):
    win = make_window()
    page = win.show_page("Chat")
    widget = page.view.add_message("assistant", "**bold** and `code`", 1)
    widget.copy_button.click()
    assert QApplication.clipboard().text() == "**bold** and `code`"


def test_long_conversation_opens_with_the_latest_messages_first(make_window, qtbot):
    from app.ui.pages.chat.view import SHOWN_AT_ONCE

    store = ChatStore()
    conv = store.create(title="Long one")
    for i in range(100):
        store.add_message(conv.id, "user" if i % 2 == 0 else "assistant", f"message {i}")
    store.close()
    win = make_window()
    page = win.show_page("Chat")
    shown = [m.text for m in page.view.messages]
    assert shown == [f"message {i}" for i in range(100 - SHOWN_AT_ONCE, 100)]
    assert page.view.earlier_button.isVisibleTo(page)
    assert "60 more" in page.view.earlier_button.text()
    page.view.earlier_button.click()
    page.view.earlier_button.click()
    assert [m.text for m in page.view.messages] == [f"message {i}" for i in range(100)]
    assert not page.view.earlier_button.isVisibleTo(page)
    # every user message can be edited and every reply regenerated (both add a branch)
    # (isHidden: the earlier ones were just built and are shown when the event loop runs)
    editable = [not m.edit_button.isHidden() for m in page.view.messages]
    assert editable == [m.role == "user" for m in page.view.messages]
    assert all(
        not m.regenerate_button.isHidden() for m in page.view.messages if m.role == "assistant"
    )

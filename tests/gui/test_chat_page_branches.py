"""Conversations as a tree on the Chat page: alternatives, branches, export/import, presets,
reasoning blocks and context overflow -- real engine on the tiny model, real SQLite, real widgets."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

from app.core.chats import ChatStore, ChatStoreError, engine_messages
from app.ui.main_window import MainWindow
from app.ui.pages.chat.view import ChatView


def _chat(win: MainWindow, model, ctx: int = 512):
    page = win.show_page("Chat")
    page.auto_fit.setChecked(False)
    page.ctx_box.setValue(ctx)
    page.gpu_box.setValue(0)
    page.choose_model(model, load=False)
    page.options.temperature.setValue(1.0)
    return page


def _send(qtbot, page, text: str, max_tokens: int = 6, seed: int = 1) -> None:
    page.options.max_tokens.setValue(max_tokens)
    page.options.seed.setValue(seed)
    page.composer.setPlainText(text)
    qtbot.keyClick(page.composer, Qt.Key.Key_Return)


def _idle(qtbot, page, timeout: int = 60000) -> None:
    qtbot.waitUntil(lambda: not page.busy and page.view.streaming is None, timeout=timeout)


def _shown(page) -> list[tuple[str, str]]:
    return [(m.role, m.text) for m in page.view.messages]


def _nav(widget) -> str:
    return widget.alt_label.text() if widget.alt_label.isVisibleTo(widget) else ""


def test_regenerate_keeps_alternatives_and_edit_branches_and_both_survive_a_restart(
    make_window, qtbot, tiny_models
):
    win = make_window()
    page = _chat(win, tiny_models["Q8_0"])
    _send(qtbot, page, "first question", seed=1)
    _idle(qtbot, page)
    _send(qtbot, page, "second question", seed=2)
    _idle(qtbot, page)
    first_reply = page.view.messages[1]
    old_text, old_id = first_reply.text, first_reply.message_id

    # Regenerate the FIRST reply (not the last): a second alternative below the first question.
    page.options.seed.setValue(3)
    first_reply.regenerate_button.click()
    _idle(qtbot, page)
    assert [r for r, _ in _shown(page)] == ["user", "assistant"]
    new_reply = page.view.messages[1]
    assert new_reply.message_id != old_id and new_reply.text
    assert _nav(new_reply) == "2/2"
    new_text = new_reply.text

    # "<" goes back to the old reply and the turn that followed it.
    new_reply.prev_button.click()
    assert _shown(page)[1] == ("assistant", old_text)
    assert [t for _, t in _shown(page)][2] == "second question"
    assert _nav(page.view.messages[1]) == "1/2"

    # Edit the first question: a new branch, the original stays as its alternative.
    page.view.messages[0].edit_button.click()
    assert page.composer.toPlainText() == "first question"
    page.composer.setPlainText("first question, edited")
    qtbot.keyClick(page.composer, Qt.Key.Key_Return)
    _idle(qtbot, page)
    assert _shown(page)[0] == ("user", "first question, edited")
    assert _nav(page.view.messages[0]) == "2/2"
    edited_reply = page.view.messages[1].text
    conv_id = page.conversation.id
    win.close()

    # After a restart: the same branch is shown, and every alternative is still there.
    win2 = make_window()
    page2 = win2.show_page("Chat")
    page2.open_conversation(conv_id)
    assert _shown(page2) == [
        ("user", "first question, edited"),
        ("assistant", edited_reply),
    ]
    page2.view.messages[0].prev_button.click()
    texts = [t for _, t in _shown(page2)]
    assert texts[0] == "first question"
    assert texts[1] == old_text  # the alternative shown last below that question
    assert texts[2] == "second question"
    page2.view.messages[1].next_button.click()
    assert [t for _, t in _shown(page2)] == ["first question", new_text]
    store = ChatStore()
    assert len(store.all_messages(conv_id)) == 7  # 3 questions, 4 replies: nothing was deleted
    store.close()


def test_export_markdown_and_json_then_import(make_window, qtbot, tiny_models, tmp_path):
    win = make_window()
    page = _chat(win, tiny_models["Q8_0"])
    page.options.choose_prompt_preset("Concise")
    _send(qtbot, page, "What is a quant?")
    _idle(qtbot, page)
    reply_id = page.view.messages[1].message_id
    page.regenerate(reply_id)
    _idle(qtbot, page)
    shown = _shown(page)

    md = page.export_conversation(tmp_path / "chat.md").read_text(encoding="utf-8")
    assert md.startswith("# What is a quant?")
    assert "## System prompt" in md and "concise assistant" in md
    assert f"## Assistant\n\n{shown[1][1].rstrip()}" in md
    data = json.loads(page.export_conversation(tmp_path / "chat.json").read_text("utf-8"))
    assert len(data["messages"]) == 3  # both replies

    before = page.conversation.id
    conv = page.import_conversation(tmp_path / "chat.json")
    assert conv.id != before and page.conversation.id == conv.id
    assert _shown(page) == shown
    assert _nav(page.view.messages[1]) == "2/2"
    assert page.options.system_prompt.toPlainText().startswith("You are a concise")

    # a broken file: a clear note, nothing imported, the page keeps working
    bad = tmp_path / "bad.json"
    bad.write_text('{"messages": [{"role": "wizard", "content": "x"}]}')
    count = len(ChatStore().conversations())
    with pytest.raises(ChatStoreError, match="role"):  # Import… shows this text in the note
        page.import_conversation(bad)
    assert len(ChatStore().conversations()) == count


def test_system_prompt_presets_builtin_and_saved_survive_a_restart(make_window, qtbot):
    win = make_window()
    page = win.show_page("Chat")
    combo = page.options.prompt_preset
    names = [combo.itemData(i) for i in range(combo.count())]
    assert "Helpful assistant" in names and "Programmer" in names
    page.options.choose_prompt_preset("Programmer")
    assert "expert programmer" in page.options.system_prompt.toPlainText()
    assert not page.options.delete_prompt_button.isEnabled()  # built-in
    page.options.system_prompt.setPlainText("Answer like a pirate.")
    page.save_prompt_preset("Pirate")
    assert combo.currentText() == "Pirate (yours)"
    assert page.options.delete_prompt_button.isEnabled()
    page.save_prompt_preset("Helpful assistant")  # taken by a built-in: said, not saved
    assert "built-in" in page.edit_note.text()
    win.close()

    page2 = make_window().show_page("Chat")
    page2.options.system_prompt.setPlainText("")
    page2.options.choose_prompt_preset("Pirate")
    assert page2.options.system_prompt.toPlainText() == "Answer like a pirate."
    page2.options.delete_prompt_button.click()
    combo2 = page2.options.prompt_preset
    assert "Pirate" not in [combo2.itemData(i) for i in range(combo2.count())]


def test_reasoning_streams_into_a_folding_block_and_stays_out_of_the_answer(qtbot, tmp_path):
    view = ChatView()
    qtbot.addWidget(view)
    view.resize(600, 400)
    view.show()
    widget = view.begin_stream()
    reply = "<think>\nThe user greets me.\nI should greet back.\n</think>\n\nHello to you!"
    for i in range(0, len(reply), 3):
        view.append_token(reply[i : i + 3])
        if i == 30:  # mid-thinking: the block is open and shows what arrived
            qtbot.waitUntil(lambda: "greets" in widget.reasoning_body.toPlainText(), timeout=3000)
            assert widget.think_button.isVisibleTo(view) and widget.think_button.isChecked()
            assert widget.reasoning_body.isVisibleTo(view)
            assert widget.reasoning_body.height() > 0
            assert widget.text == ""
    view.end_stream(reply, "12 tokens", reasoning_tokens=9)
    assert widget.text == "Hello to you!"
    shown = widget.stable.toPlainText() + widget.tail.toPlainText()
    assert shown.strip() == "Hello to you!"
    assert widget.reasoning == "The user greets me.\nI should greet back."
    assert widget.think_button.text() == "Thinking (9 tokens)"
    assert not widget.reasoning_body.isVisibleTo(view)  # folded once the reply is done
    widget.think_button.click()
    assert widget.reasoning_body.isVisibleTo(view) and widget.reasoning_body.height() > 0
    view.grab().save(str(tmp_path / "think.png"))


def test_a_reply_that_only_closes_the_block_moves_its_start_into_it(qtbot):
    # Qwen3 / DeepSeek-R1 templates end the prompt with <think>: the reply only closes it.
    view = ChatView()
    qtbot.addWidget(view)
    view.show()
    widget = view.begin_stream()
    for piece in ["Let me ", "see: 6 times 7.", "\n</th", "ink>\n\n", "It is ", "42."]:
        view.append_token(piece)
    assert widget.text == "It is 42."  # (asking does not take pieces away from the render)
    qtbot.waitUntil(lambda: "42" in widget.tail.toPlainText(), timeout=3000)
    assert widget.reasoning == "Let me see: 6 times 7.\n"
    assert widget.reasoning_body.toPlainText() == "Let me see: 6 times 7.\n"
    assert widget.think_button.isVisibleTo(view)
    view.end_stream("Let me see: 6 times 7.\n</think>\n\nIt is 42.", "6 tokens", 3)
    assert widget.text == "It is 42." and widget.reasoning == "Let me see: 6 times 7."
    assert "Let me" not in widget.stable.toPlainText() + widget.tail.toPlainText()


def test_reasoning_is_stored_apart_shown_folded_and_counted(make_window, qtbot):
    store = ChatStore()
    conv = store.create(title="Thinker")
    store.add_message(conv.id, "user", "hi")
    store.add_message(
        conv.id,
        "assistant",
        "Hello!",
        {"tokens": 20, "gen_tok_s": 10.0, "ttft_s": 0.1, "reasoning_tokens": 14},
        reasoning="They said hi.",
    )
    store.close()
    page = make_window().show_page("Chat")
    page.open_conversation(conv.id)
    reply = page.view.messages[1]
    qtbot.waitUntil(lambda: reply.isVisibleTo(page), timeout=3000)  # shown by the event loop
    assert reply.text == "Hello!" and reply.reasoning == "They said hi."
    assert reply.think_button.isVisibleTo(page) and not reply.reasoning_body.isVisibleTo(page)
    assert "14 thinking" in reply.stats_label.text()
    assert reply.think_button.text() == "Thinking (14 tokens)"
    sent = engine_messages("", page._history(reply.message_id))
    assert [m["content"] for m in sent] == ["hi", "Hello!"]  # the reasoning is not sent back


def _long_turns(store, cid, turns: int, words: int) -> None:
    for i in range(turns):
        store.add_message(cid, "user", f"question {i}: " + " ".join(["elephant"] * words))
        store.add_message(cid, "assistant", f"answer {i}: " + " ".join(["giraffe"] * words))


def test_a_prompt_that_does_not_fit_is_caught_before_sending(make_window, qtbot, tiny_models):
    win = make_window()
    page = _chat(win, tiny_models["Q8_0"], ctx=512)
    store = ChatStore()
    conv = store.create(title="Too long")
    _long_turns(store, conv.id, turns=6, words=60)
    store.close()
    page.open_conversation(conv.id)
    _send(qtbot, page, "and now?", max_tokens=32)
    qtbot.waitUntil(lambda: page.overflow_banner.isVisibleTo(page), timeout=60000)
    _idle(qtbot, page)
    # nothing was sent: no empty bubble, the message kept, the context bar full (not 0)
    assert [r for r, _ in _shown(page)][-1] == "user"
    assert _shown(page)[-1] == ("user", "and now?")
    assert page.context_bar.value() == page.context_bar.maximum() == 512
    assert "does not fit" in page.overflow_banner.text.text()

    page.overflow_banner.drop_button.click()
    _idle(qtbot, page)
    assert not page.overflow_banner.isVisibleTo(page)
    roles = [r for r, _ in _shown(page)]
    assert roles[-2:] == ["user", "assistant"] and page.view.messages[-1].text
    assert "oldest messages were left out" in page.edit_note.text()
    assert 0 < page.context_bar.value() <= 512
    assert ChatStore().get(conv.id).options.get("drop_oldest") is True
    # the whole conversation is still there
    assert len(ChatStore().messages(conv.id)) == 14

    # the next message goes without asking (the choice is remembered for this chat)
    _send(qtbot, page, "one more", max_tokens=8)
    _idle(qtbot, page)
    assert not page.overflow_banner.isVisibleTo(page)
    assert [r for r, _ in _shown(page)][-2:] == ["user", "assistant"]


def test_overflow_offers_a_new_chat_with_the_message(make_window, qtbot, tiny_models):
    win = make_window()
    page = _chat(win, tiny_models["Q8_0"], ctx=512)
    store = ChatStore()
    conv = store.create(title="Full")
    _long_turns(store, conv.id, turns=6, words=60)
    store.close()
    page.open_conversation(conv.id)
    _send(qtbot, page, "start over here", max_tokens=8)
    qtbot.waitUntil(lambda: page.overflow_banner.isVisibleTo(page), timeout=60000)
    _idle(qtbot, page)
    page.overflow_banner.new_button.click()
    assert page.conversation.id != conv.id
    assert page.view.messages == []
    assert page.composer.toPlainText() == "start over here"
    qtbot.keyClick(page.composer, Qt.Key.Key_Return)
    _idle(qtbot, page)
    assert [r for r, _ in _shown(page)] == ["user", "assistant"]


def test_a_reply_that_runs_into_the_context_end_keeps_its_text_and_a_full_bar(
    make_window, qtbot, tiny_models
):
    win = make_window()
    page = _chat(win, tiny_models["Q8_0"], ctx=256)
    page.ignore_eos = True
    _send(qtbot, page, "Tell me everything", max_tokens=2000)  # fits: 64 tokens kept free
    _idle(qtbot, page)
    reply = page.view.messages[-1]
    assert reply.role == "assistant" and reply.text  # not an empty bubble
    assert "cut at the context size" in reply.stats_label.text()
    assert page.context_bar.value() >= 250  # what the chat uses now, not 0
    assert not page.overflow_banner.isVisibleTo(page)
    # the next message does not fit any more: asked before sending, the reply kept
    _send(qtbot, page, "and more", max_tokens=2000)
    qtbot.waitUntil(lambda: page.overflow_banner.isVisibleTo(page), timeout=60000)
    _idle(qtbot, page)
    assert [r for r, _ in _shown(page)] == ["user", "assistant", "user"]
    assert page.context_bar.value() == 256

"""Model text is shown as sanitized markdown: no live HTML, no images loaded, no link followed."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QTextDocument

from app.core.chats import ChatStore
from app.ui.markdown import render, split_stable
from app.ui.pages.chat.view import ChatView

HOSTILE = (
    "Hi <script>alert('x')</script> there\n\n"
    '<img src="x" onerror="alert(1)">\n\n'
    "[click](javascript:alert(1)) and [docs](https://example.org/a?b=1)\n\n"
    "![secret](file:///etc/passwd) ![local](/etc/hostname) ![remote](https://x.org/y.png)\n\n"
    '<a href="action:delete">fake button</a>\n\n'
    "```html\n<b>not bold</b>\n```\n"
)


def _images(doc: QTextDocument) -> int:
    found = 0
    block = doc.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            if it.fragment().charFormat().isImageFormat():
                found += 1
            it += 1
        block = block.next()
    return found


def _anchors(doc: QTextDocument) -> list[str]:
    out = []
    block = doc.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            fmt = it.fragment().charFormat()
            if fmt.isAnchor():
                out.append(fmt.anchorHref())
            it += 1
        block = block.next()
    return out


def test_renderer_escapes_html_and_drops_unsafe_links_and_images():
    out = render(HOSTILE)
    for bad in ("<script", "<img", 'onerror="', 'href="javascript', 'href="action', "<b>", 'src="'):
        assert bad not in out, bad
    assert "&lt;script&gt;" in out and "&lt;img" in out
    assert '<a href="https://example.org/a?b=1">docs</a>' in out
    assert "[remote]" in out  # an image is shown as its alt text, never loaded


@pytest.mark.parametrize("streamed", [False, True])
def test_hostile_reply_stays_text_in_the_view(qtbot, streamed):
    view = ChatView()
    qtbot.addWidget(view)
    if streamed:
        view.begin_stream(1)
        for i in range(0, len(HOSTILE), 3):
            view.append_token(HOSTILE[i : i + 3])
            qtbot.wait(1)
        widget = view.end_stream(None, "")
    else:
        widget = view.add_message("assistant", HOSTILE, 1)
    text = widget.stable.toPlainText() + widget.tail.toPlainText()
    assert "<script>alert('x')</script>" in text
    assert '<img src="x" onerror="alert(1)">' in text
    assert "<b>not bold</b>" in text
    for body in (widget.stable, widget.tail):
        assert _images(body.document()) == 0
        assert all(h.startswith("https://") for h in _anchors(body.document()))
        assert not body.openLinks() and not body.openExternalLinks()
    links = []
    view.link_activated.connect(links.append)
    assert widget.text == HOSTILE


def test_hostile_text_from_the_database_stays_text(qtbot):
    from app.ui.main_window import MainWindow

    store = ChatStore()
    conv = store.create()
    store.add_message(conv.id, "user", "<b>me</b>")
    store.add_message(conv.id, "assistant", HOSTILE)
    store.close()
    win = MainWindow()
    qtbot.addWidget(win)
    page = win.show_page("Chat")
    user, reply = page.view.messages
    assert user.stable.toPlainText() == "<b>me</b>"
    assert "<script>" in reply.stable.toPlainText()
    assert _images(reply.stable.document()) == 0
    win.close()


SAMPLE = (
    "# Title\n\nSome *text* with `code`.\n\n- a\n- b\n\n1. one\n2. two\n\n"
    "```python\ndef f():\n\n    return 1\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nEnd."
)


def test_streamed_render_matches_one_shot_render(qtbot):
    view = ChatView()
    qtbot.addWidget(view)
    view.begin_stream(1)
    for i in range(0, len(SAMPLE), 2):
        view.append_token(SAMPLE[i : i + 2])
        view._render_now()  # every piece: the worst case for the incremental split
    streamed = view.end_stream(None, "")
    whole = QTextDocument()
    whole.setHtml(render(SAMPLE))
    got = streamed.stable.toPlainText() + "\n" + streamed.tail.toPlainText()
    assert got.split() == whole.toPlainText().split()


def test_streaming_touches_only_the_last_message(qtbot):
    view = ChatView()
    qtbot.addWidget(view)
    earlier = [view.add_message("user" if i % 2 else "assistant", f"m{i}", i) for i in range(6)]
    counts = [w.render_count for w in earlier]
    view.begin_stream(99)
    for i in range(200):
        view.append_token(f"tok{i} ")
        if i % 20 == 0:
            qtbot.wait(60)
    view.end_stream(None, "")
    assert [w.render_count for w in earlier] == counts
    assert view.messages[-1].render_count < 200  # throttled, not once per token


def test_split_stable_never_cuts_inside_a_code_fence():
    text = "intro\n\n```\ncode\n\nmore code\n"
    assert text[: split_stable(text)] == "intro\n\n"
    closed = text + "```\n\nafter"
    assert closed[: split_stable(closed)] == "intro\n\n```\ncode\n\nmore code\n```\n\n"
    assert split_stable("no blank line yet") == 0


def test_force_split_keeps_long_blocks_bounded_and_code_shaded():
    from app.ui.markdown import force_split

    done, rest = force_split("```python\nline1\nline2\npartial")
    assert done == "```python\nline1\nline2\n```\n" and rest == "```python\npartial"
    assert "<pre" in render(done) and "line2" in render(done)
    done, rest = force_split("a long paragraph\nsecond line of it")
    assert (done, rest) == ("a long paragraph\n", "second line of it")
    done, rest = force_split("words without any line break")
    assert done + rest == "words without any line break" and rest == "break"


def test_a_reply_without_paragraph_breaks_renders_in_bounded_pieces(qtbot):
    from app.ui.pages.chat import view as chat_view

    view = ChatView()
    qtbot.addWidget(view)
    widget = view.begin_stream(1)
    words = [f"word{i} " for i in range(3000)]  # one endless paragraph, ~22 000 characters
    longest_tail = 0
    for i, word in enumerate(words):
        view.append_token(word)
        if i % 25 == 0:
            view._render_now()
            longest_tail = max(longest_tail, len(widget._tail))
    view.end_stream(None, "")
    assert longest_tail <= chat_view.TAIL_LIMIT + 25 * 10
    shown = (widget.stable.toPlainText() + " " + widget.tail.toPlainText()).split()
    assert shown == "".join(words).split()


def test_links_ask_before_opening_and_only_for_web_addresses(qtbot, monkeypatch):
    from PySide6.QtCore import QUrl

    from app.ui.main_window import MainWindow
    from app.ui.pages.chat import page as chat

    asked: list[str] = []
    opened: list[QUrl] = []
    monkeypatch.setattr(chat, "confirm", lambda _parent, _title, text: asked.append(text) or False)
    monkeypatch.setattr(chat.QDesktopServices, "openUrl", opened.append)
    win = MainWindow()
    qtbot.addWidget(win)
    page = win.show_page("Chat")
    page.view.link_activated.emit(QUrl("file:///etc/passwd"))
    page.view.link_activated.emit(QUrl("https://example.org/x"))
    assert len(asked) == 1 and "https://example.org/x" in asked[0]
    assert opened == []  # the user said no
    win.close()


def test_questions_show_outside_text_literally(qtbot):
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    from app.ui.dialogs import confirm

    seen = []

    def answer() -> None:
        box = next(w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox))
        seen.append((box.textFormat(), box.text()))
        box.button(QMessageBox.StandardButton.Yes).click()

    QTimer.singleShot(50, answer)
    assert confirm(None, "Delete model", 'Delete <img src="x" onerror="y">.gguf?') is True
    assert seen == [(Qt.TextFormat.PlainText, 'Delete <img src="x" onerror="y">.gguf?')]

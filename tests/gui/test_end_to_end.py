"""The whole path a person takes, on the real core: search the Hub imitation, see the variants with
fit badges, download the recommended one, find it in the Library, chat with it (a streamed reply,
then Stop), close the window, reopen it, and find the conversation still there."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from app.core.chats import ChatStore
from app.ui.main_window import MainWindow
from app.ui.pages.models.table import COL_ACTION, COL_FIT, COL_QUANT
from app.ui.widgets.badges import BADGE_ROLE
from tests.hub_fixtures import TINY_REPO

SLOW_MS = 120_000


def _window(qtbot) -> MainWindow:
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=5000)
    return win


def test_search_download_chat_stop_and_reopen(qtbot, hub):
    win = _window(qtbot)
    try:
        # 1. Search the Hub (the loopback imitation) and open the repo.
        models = win.show_page("Models")
        models.search_box.setText("tiny")
        qtbot.keyClick(models.search_box, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: models.repo_list.count() > 0 and not models.busy, timeout=SLOW_MS)
        names = [models.repo_list.item(i).text() for i in range(models.repo_list.count())]
        models.repo_list.setCurrentRow(names.index(TINY_REPO))

        # 2. Variants with fit badges, the recommended one starred.
        qtbot.waitUntil(lambda: models.advice is not None, timeout=SLOW_MS)
        table = models.table_model
        assert table.rowCount() == 4
        verdicts = {table.index(r, COL_FIT).data(BADGE_ROLE)[0] for r in range(4)}
        assert verdicts <= {"full_gpu", "partial_gpu", "cpu"}
        recommended = models.advice.recommended
        row = table.row_of(recommended)
        assert table.index(row, COL_QUANT).data().startswith("★")

        # 3. Download it from its row.
        models.table.indexWidget(table.index(row, COL_ACTION)).click()
        downloads = win.page("Downloads")
        item = downloads.find_item(TINY_REPO, recommended)
        qtbot.waitUntil(lambda: item.row.state == "done" and not item.active, timeout=SLOW_MS)

        # 4. It is in the Library (refreshed by the library_changed event), with provenance.
        library = win.show_page("Library")
        qtbot.waitUntil(
            lambda: any(m.hub_file == recommended for m in library.models), timeout=SLOW_MS
        )
        model = next(m for m in library.models if m.hub_file == recommended)
        # The recommendation may be the split F16 (a tiny model writes far above the speed floor):
        # every shard is kept with its own verified hash, the first one named by the variant.
        shards = next(v.shards for v in table.variants if v.file == recommended)
        assert model.repo_id == TINY_REPO and len(model.sha256) == shards
        assert model.sha256[0] == hub.sha256(TINY_REPO, recommended)
        assert library.select(model.path)

        # 5. Chat with it: a streamed reply appears, and Stop ends it early.
        library.chat_selected()
        chat = win.page("Chat")
        assert win.current_title() == "Chat"
        qtbot.waitUntil(lambda: chat.loaded is not None and not chat.busy, timeout=SLOW_MS)
        assert chat.loaded.path == str(model.path)  # loaded through the fit plan
        chat.ignore_eos = True
        chat.options.max_tokens.setValue(3000)
        chat.composer.setPlainText("Write a very long story about memory.")
        qtbot.keyClick(chat.composer, Qt.Key.Key_Return)
        qtbot.waitUntil(
            lambda: (
                chat.generating
                and chat.view.streaming is not None
                and len(chat.view.streaming.text) > 20
            ),
            timeout=SLOW_MS,
        )
        qtbot.keyClick(chat.composer, Qt.Key.Key_Escape)
        qtbot.waitUntil(lambda: not chat.busy and chat.view.streaming is None, timeout=SLOW_MS)
        conversation = chat.conversation.id
        stored = ChatStore().messages(conversation)
        assert [m.role for m in stored] == ["user", "assistant"]
        assert stored[1].stats["stop_reason"] == "cancelled" and stored[1].stats["tokens"] < 3000
        reply = stored[1].content
        assert reply and chat.view.messages[1].text == reply
    finally:
        win.close()
    assert not chat.engine.alive and not win.context.runner.active

    # 6. Reopen: the conversation and the downloaded model are still there.
    again = _window(qtbot)
    try:
        chat2 = again.show_page("Chat")
        ids = [
            int(chat2.conversation_list.item(i).data(Qt.ItemDataRole.UserRole))
            for i in range(chat2.conversation_list.count())
        ]
        assert conversation in ids
        chat2.open_conversation(conversation)
        assert [(m.role, m.text) for m in chat2.view.messages] == [
            ("user", "Write a very long story about memory."),
            ("assistant", reply),
        ]
        library2 = again.show_page("Library")
        assert any(m.hub_file == recommended for m in library2.models)
    finally:
        again.close()

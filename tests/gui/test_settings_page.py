"""The Settings page over the real settings file: round trip, live apply, refusals."""

from __future__ import annotations

import json

from PySide6.QtGui import QGuiApplication, QPalette

from app.core import paths
from app.core.settings import Settings
from app.ui.main_window import MainWindow


def _page(qtbot):
    QGuiApplication.setPalette(QPalette())
    win = MainWindow()
    qtbot.addWidget(win)
    return win, win.show_page("Settings")


def test_settings_round_trip_through_the_page(qtbot, tmp_path):
    win, page = _page(qtbot)
    changed = []
    win.context.events.settings_changed.connect(lambda: changed.append(1))
    lib = tmp_path / "my models"
    page.library_dir.setText(str(lib))
    page.library_dir.editingFinished.emit()
    page.threads.setValue(3)
    page.default_ctx.setValue(8192)
    page.hub_token.setText("hf_abc")
    page.hub_token.editingFinished.emit()
    page.offline.setChecked(True)
    page.theme.setCurrentIndex(page.theme.findData("dark"))
    page.sampling.preset.setCurrentIndex(page.sampling.preset.findData("creative"))
    page.sampling.system_prompt.setPlainText("You are terse.")
    assert len(changed) >= 7
    stored = json.loads(paths.settings_path().read_text())
    assert stored["library_dir"] == str(lib) and lib.is_dir()
    assert stored["n_threads"] == 3 and stored["default_n_ctx"] == 8192
    assert stored["hub_token"] == "hf_abc" and stored["offline"] is True
    assert stored["theme"] == "dark" and stored["sampling_preset"] == "creative"
    assert stored["temperature"] == 1.0 and stored["system_prompt"] == "You are terse."
    # The theme applies now, not after a restart.
    assert QGuiApplication.palette().window().color().lightness() < 100
    win.close()

    # A fresh window reads the same values back into the form.
    win2, page2 = _page(qtbot)
    assert page2.library_dir.text() == str(lib)
    assert page2.threads.value() == 3 and page2.default_ctx.value() == 8192
    assert page2.hub_token.text() == "hf_abc" and page2.offline.isChecked()
    assert page2.theme.currentData() == "dark"
    assert page2.sampling.preset.currentData() == "creative"
    # ...and other pages see them: the chat's new conversations start with these defaults.
    chat = win2.show_page("Chat")
    chat.new_chat()
    assert chat.options.system_prompt.toPlainText() == "You are terse."
    assert chat.options.temperature.value() == 1.0
    page2.reset()
    assert Settings.load() == Settings()
    assert QGuiApplication.palette().window().color().lightness() > 150  # back to the system's
    win2.close()


def test_unusable_library_folder_is_refused_in_words(qtbot, tmp_path):
    win, page = _page(qtbot)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    page.library_dir.setText(str(blocker / "sub"))
    page.library_dir.editingFinished.emit()
    assert "Not saved" in page.message.text() and "cannot create" in page.message.text()
    assert page.library_dir.text() == ""  # the form shows what is really stored
    page.library_dir.setText("relative/folder")
    page.library_dir.editingFinished.emit()
    assert "full path" in page.message.text()
    assert Settings.load().library_dir == ""
    win.close()


def test_damaged_settings_file_is_reported_on_the_page(qtbot):
    paths.settings_path().write_text('{"n_threads": "lots", "theme": "dark"}')
    win, page = _page(qtbot)
    assert page.threads.value() == 0 and page.theme.currentData() == "dark"
    banners = [page.problems.itemAt(i).widget() for i in range(page.problems.count())]
    texts = [label.text() for b in banners for label in b.findChildren(type(page.message))]
    assert any("n_threads" in t for t in texts)
    win.close()


def test_library_folder_change_refreshes_the_chat_model_list(qtbot, tmp_path, tiny_models):
    import shutil

    win, page = _page(qtbot)
    chat = win.show_page("Chat")
    assert chat.selected_model() is None
    lib = tmp_path / "lib2"
    lib.mkdir()
    shutil.copy(tiny_models["Q4_0"], lib / "tiny-q4.gguf")
    from app.core.library import Library

    model = Library(folder=lib).add([lib / "tiny-q4.gguf"], ["0" * 64], source="import")
    page.change("library_dir", str(lib))
    paths_ = [chat.model_picker.itemData(i) for i in range(chat.model_picker.count())]
    assert str(model.path) in paths_
    page.default_ctx.setValue(2048)
    assert chat.ctx_box.value() == 2048  # the chat's next auto-fit load starts from it
    win.close()

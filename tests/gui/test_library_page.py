"""The Library page on a real library (SQLite + generated models): list, fit, import, actions."""

from __future__ import annotations

import hashlib
import shutil

from PySide6.QtCore import QUrl

from app.core.library import Library
from app.ui.pages import library as library_page
from app.ui.pages.library import FIT_COLUMN
from app.ui.widgets.badges import BADGE_ROLE


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stock(tiny_models, quants=("Q4_0", "Q8_0")):
    """Put generated models in the library folder as a Hub download would."""
    lib = Library()
    folder = lib.hub_folder("acme/tiny-GGUF")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for q in quants:
        dst = folder / f"tiny-{q}.gguf"
        shutil.copy(tiny_models[q], dst)
        out.append(
            lib.add(
                [dst],
                [_sha(dst)],
                source="hub",
                repo_id="acme/tiny-GGUF",
                commit="a" * 40,
                hub_file=dst.name,
            )  # fmt: skip
        )
    return out


def _texts(page, col):
    return [page.table.item(r, col).text() for r in range(page.table.rowCount())]


def test_lists_models_with_provenance_and_fit_badges(window, qtbot, tiny_models):
    models = _stock(tiny_models)
    page = window.show_page("Library")
    assert _texts(page, 0) == ["tiny-Q4_0.gguf", "tiny-Q8_0.gguf"]
    assert _texts(page, 1) == ["Q4_0", "Q8_0"]
    assert all(t.startswith("acme/tiny-GGUF @ aaaaaaaaaa") for t in _texts(page, 4))
    assert models[0].sha256[0] in page.table.item(0, 5).toolTip()
    # fit badges arrive from the background planner: this machine runs them on the CPU
    qtbot.waitUntil(
        lambda: all(
            page.table.item(r, FIT_COLUMN).data(BADGE_ROLE)[0] != "unknown" for r in range(2)
        ),
        timeout=60000,
    )
    verdicts = {page.table.item(r, FIT_COLUMN).data(BADGE_ROLE)[0] for r in range(2)}
    assert verdicts <= {"cpu", "partial_gpu", "full_gpu"}
    page.select(models[1].path)
    assert page.detail_labels["SHA-256"].text() == models[1].sha256[0]
    assert page.detail_labels["Commit"].text() == "a" * 40
    assert "acme/tiny-GGUF" in page.detail_labels["Source"].text()


def test_import_hashes_off_thread_and_lists_the_model(window, qtbot, tiny_models, tmp_path):
    page = window.show_page("Library")
    assert page.empty.isVisibleTo(page) and page.table.rowCount() == 0
    outside = tmp_path / "downloads" / "my-model.gguf"
    outside.parent.mkdir()
    shutil.copy(tiny_models["Q4_K_M"], outside)
    changed = []
    window.context.events.library_changed.connect(lambda: changed.append(1))
    page.import_file(outside)
    assert page.progress.isVisible()
    qtbot.waitUntil(lambda: page.table.rowCount() == 1, timeout=30000)
    assert not page.progress.isVisible() and changed
    assert "Imported my-model.gguf" in page.message.text()
    assert _texts(page, 4) == ["imported from disk"]
    [model] = Library().list()
    assert model.sha256 == [_sha(outside)] and model.quant == "Q4_K_M"
    # the chat page's picker offers it now
    chat = window.show_page("Chat")
    assert chat.model_picker.findData(str(model.path)) >= 0
    # deleting an imported model outside the library folder leaves the file on disk
    page = window.show_page("Library")
    page.delete(model)
    assert page.table.rowCount() == 0 and outside.exists()
    assert "left where it is" in page.message.text()


def test_import_of_a_bad_file_says_why_and_adds_nothing(window, qtbot, tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("these are my notes, not a model")
    page = window.show_page("Library")
    page.import_file(bad)
    qtbot.waitUntil(lambda: not page.progress.isVisible(), timeout=30000)
    assert "Could not import notes.gguf" in page.message.text()
    assert Library().list() == [] and bad.exists()


def test_delete_removes_files_inside_the_library(window, qtbot, tiny_models):
    model = _stock(tiny_models, ("Q4_0",))[0]
    page = window.show_page("Library")
    assert page.delete(model) == [model.path]
    assert not model.path.exists() and page.table.rowCount() == 0


def test_chat_and_open_folder_actions(window, qtbot, tiny_models, monkeypatch):
    model = _stock(tiny_models, ("Q4_0",))[0]
    opened: list[QUrl] = []
    monkeypatch.setattr(library_page.QDesktopServices, "openUrl", opened.append)
    page = window.show_page("Library")
    page.open_folder()
    assert opened[-1].toLocalFile() == str(Library().folder)
    page.select(model.path)
    page.show_button.click()
    assert opened[-1].toLocalFile() == str(model.path.parent)
    chat_page = window.show_page("Chat")
    chat_page.auto_fit.setChecked(False)
    chat_page.ctx_box.setValue(512)
    window.show_page("Library")
    page.chat_button.click()
    assert window.current_title() == "Chat"
    assert chat_page.selected_model() == str(model.path)
    qtbot.waitUntil(lambda: chat_page.loaded is not None, timeout=60000)


def test_missing_file_is_shown_and_cannot_be_chatted(window, qtbot, tiny_models):
    model = _stock(tiny_models, ("Q4_0",))[0]
    model.path.unlink()
    page = window.show_page("Library")
    page.select(model.path)
    assert page.table.item(0, FIT_COLUMN).text() == "File missing"
    assert not page.chat_button.isEnabled()
    assert "missing" in page.detail_labels["Fit"].text()


def test_compare_opens_the_compare_page_with_the_variants(window, qtbot, tiny_models):
    models = _stock(tiny_models)
    page = window.show_page("Library")
    page.select(models[0].path)
    page.compare_button.click()
    assert window.current_title() == "Compare"
    compare = window.page("Compare")
    assert sorted(compare.models()) == sorted(str(m.path) for m in models)

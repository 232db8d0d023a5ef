"""Desktop integration: "Open folder" without a file manager shows the path with a Copy button,
and right-click menus on the Library table and on Downloads rows act on the real widgets."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication

from app.core import hub as core_hub
from app.core.library import Library
from tests.hub_fixtures import TINY_REPO


def _actions(menu) -> dict[str, object]:
    return {a.text(): a for a in menu.actions() if a.text()}


def test_open_folder_without_a_file_manager_shows_the_path(window, qtbot):
    # The offscreen platform has no file manager: openUrl returns False, as on a bare desktop.
    page = window.show_page("Library")
    page.folder_button.click()
    dialog = page.path_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.field.text() == str(Library().folder)
    dialog.copy_button.click()
    assert QApplication.clipboard().text() == str(Library().folder)
    assert dialog.copy_button.text() == "Copied"


def test_library_row_menu_copies_shows_and_deletes(window, qtbot, tiny_models, monkeypatch):
    for _ in Library().import_file(tiny_models["Q4_K_M"]):
        pass
    page = window.show_page("Library")
    page.refresh()
    assert page.context_menu(5) is None  # no such row
    actions = _actions(page.context_menu(0))
    assert list(actions) == ["Copy path", "Show in folder", "Chat", "Delete…"]
    actions["Copy path"].trigger()
    assert QApplication.clipboard().text() == str(page.models[0].path)
    actions["Show in folder"].trigger()
    assert page.path_dialog is not None
    assert page.path_dialog.field.text() == str(page.models[0].path.parent)
    from app.ui.pages import library as library_page

    monkeypatch.setattr(library_page, "confirm", lambda *_a: True)  # the Yes of the dialog
    _actions(page.context_menu(0))["Delete…"].trigger()
    assert page.table.rowCount() == 0 and Library().list() == []


def test_download_row_menu_offers_the_rows_actions(window, qtbot, hub):
    hub.throttle(100_000)
    page = window.show_page("Downloads")
    variant = core_hub.pick_variant(core_hub.list_variants(TINY_REPO), "Q4_K_M")
    item = page.start_download(variant)
    qtbot.waitUntil(lambda: item.row.state == "downloading", timeout=30_000)
    actions = _actions(item.row.context_menu())
    assert "Pause" in actions and "Cancel" in actions and "Resume" not in actions
    actions["Copy file name"].trigger()
    assert QApplication.clipboard().text() == variant.file
    actions["Pause"].trigger()
    qtbot.waitUntil(lambda: item.row.state == "paused" and not item.active, timeout=30_000)
    assert "Resume" in _actions(item.row.context_menu())

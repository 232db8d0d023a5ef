"""States that went stale as people used the app (issue 16), each reproduced on real widgets:
a Download button for a variant in the library, "Downloading…" after the download finished, a
context slider past the model's training length, the Library and Chat disagreeing on the context,
disabled controls that look enabled in the dark theme, a paused download nobody mentions."""

from __future__ import annotations

from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

from app.core import hub as core_hub
from app.core.library import Library
from app.ui.main_window import PAGES
from app.ui.pages.models.page import CONTEXT_STOPS
from app.ui.settings_service import apply_theme
from tests.hub_fixtures import TINY_REPO

PLAN_MS = 120_000
Q4 = "quantdesk-test-Q4_K_M.gguf"


def _open_planned(qtbot, window):
    page = window.show_page("Models")
    page.open_repo(TINY_REPO)
    qtbot.waitUntil(lambda: page.advice is not None, timeout=PLAN_MS)
    return page


def _select(page, file: str) -> None:
    from app.ui.pages.models.table import COL_QUANT

    row = page.table_model.row_of(file)
    page.table.selectRow(row)
    page.table.setCurrentIndex(page.table_model.index(row, COL_QUANT))
    page._show_details()


def test_details_do_not_offer_a_download_for_a_variant_in_the_library(window, qtbot, hub):
    page = _open_planned(qtbot, window)
    downloads = window.page("Downloads")
    variant = next(v for v in page.table_model.variants if v.file == Q4)
    page.request_download(variant)
    item = downloads.find_item(TINY_REPO, Q4)
    qtbot.waitUntil(lambda: item.row.state == "done" and not item.active, timeout=60_000)
    _select(page, Q4)
    assert page.details.download_button.text() == "In library"
    page.details.download_button.click()
    assert window.current_title() == "Library"  # it shows the model instead of downloading again
    assert len(downloads.items) == 1


def test_downloading_status_goes_when_the_download_is_done(window, qtbot, hub):
    page = _open_planned(qtbot, window)
    downloads = window.page("Downloads")
    variant = next(v for v in page.table_model.variants if v.file == Q4)
    page.request_download(variant)
    assert "Downloading" in page.plan_status.text()
    item = downloads.find_item(TINY_REPO, Q4)
    qtbot.waitUntil(lambda: item.row.state == "done" and not item.active, timeout=60_000)
    qtbot.waitUntil(lambda: "Downloading" not in page.plan_status.text(), timeout=5_000)
    assert "in the Library" in page.plan_status.text()


def test_context_slider_stops_at_the_trained_context(window, qtbot, hub):
    page = _open_planned(qtbot, window)
    trained = max(f.n_ctx_train for f in page.table_model.fits.values())
    assert 0 < trained < CONTEXT_STOPS[-1]
    assert CONTEXT_STOPS[page.ctx_slider.maximum()] == trained
    page.ctx_slider.setValue(page.ctx_slider.maximum() + 3)  # clamped by Qt at the maximum
    assert page.n_ctx == trained


def test_library_shows_the_context_chat_loads_with(window, qtbot, tiny_models):
    for _ in Library().import_file(tiny_models["Q4_K_M"]):
        pass
    window.context.settings.default_n_ctx = 16384  # more than the model was trained for
    lib_page = window.show_page("Library")
    lib_page.refresh()
    qtbot.waitUntil(lambda: "planning" not in lib_page.detail_labels["Fit"].text(), timeout=PLAN_MS)
    planned = window.context.planner.plan_load(tiny_models["Q4_K_M"], 16384)
    assert planned.n_ctx < 16384
    assert f"context {planned.n_ctx}" in lib_page.detail_labels["Fit"].text()
    assert "context 16384" not in lib_page.detail_labels["Fit"].text()


def test_dark_theme_disabled_controls_look_disabled(qtbot):
    qapp = QApplication.instance()
    assert isinstance(qapp, QApplication)
    try:
        apply_theme("dark")
        pal = qapp.palette()
        for role in (QPalette.ColorRole.ButtonText, QPalette.ColorRole.Text,
                     QPalette.ColorRole.WindowText):  # fmt: skip
            on = pal.color(QPalette.ColorGroup.Active, role)
            off = pal.color(QPalette.ColorGroup.Disabled, role)
            assert abs(on.lightness() - off.lightness()) >= 60, (role, on.name(), off.name())
    finally:
        apply_theme("system")


def test_a_paused_download_is_flagged_in_the_sidebar_after_a_restart(make_window, qtbot, hub):
    hub.throttle(200_000)
    first = make_window()
    item = first.show_page("Downloads").start_download(
        core_hub.pick_variant(core_hub.list_variants(TINY_REPO), Q4)
    )
    qtbot.waitUntil(
        lambda: item.last is not None and item.last.bytes_done > 100_000, timeout=60_000
    )
    first.close()
    second = make_window()  # opens on Hardware: the Downloads page was never visited
    assert second.current_title() != "Downloads"
    row = [title for title, _ in PAGES].index("Downloads")
    qtbot.waitUntil(lambda: "paused" in second.sidebar.item(row).text(), timeout=30_000)
    # Resuming it clears the flag; the running count replaces it.
    second.page("Downloads").find_item(TINY_REPO, Q4).start()
    qtbot.waitUntil(lambda: "paused" not in second.sidebar.item(row).text(), timeout=30_000)


def test_ctrl_q_closes_the_window(make_window, qtbot):
    from PySide6.QtCore import Qt

    win = make_window()
    assert win.isVisible()
    qtbot.keyClick(win, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not win.isVisible(), timeout=10_000)

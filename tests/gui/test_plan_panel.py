"""The plan panel of the Models page: its parts add up to the figure it shows, the weights are
never more than the file, sizes are decimal like the Hub's, technical notes wait behind a toggle."""

from __future__ import annotations

from app.core.units import human_bytes
from app.ui.pages.models.table import COL_QUANT, COL_SIZE
from tests.hub_fixtures import TINY_REPO


def test_plan_panel_adds_up_and_weights_fit_in_the_file(window, qtbot, hub):
    page = window.show_page("Models")
    page.open_repo(TINY_REPO)
    qtbot.waitUntil(lambda: page.advice is not None, timeout=120_000)
    model = page.table_model
    for row, variant in enumerate(model.variants):
        page.table.setCurrentIndex(model.index(row, COL_QUANT))
        page._show_details()
        bar = page.details.ram_bar
        parts = {s.label: s.nbytes for s in bar.segments}
        assert sum(parts.values()) == bar.total
        # What the title line says is the sum of the legend's parts, in the same units.
        assert bar.summary().startswith(f"System RAM: {human_bytes(bar.total)} of ")
        assert parts["Weights"] <= variant.size_bytes, (variant.quant, parts)
        assert model.index(row, COL_SIZE).data().startswith(human_bytes(variant.size_bytes))
        assert "MiB" not in bar.summary() and "GiB" not in bar.summary()
    details = page.details
    assert details.plain.text() and "safety margin" in details.plain.text()
    assert not details.notes.isVisibleTo(details)
    if details.details_toggle.isVisibleTo(details):
        details.details_toggle.click()
        assert details.notes.isVisibleTo(details) and details.notes.text()
        assert details.details_toggle.text() == "Hide details"

"""The recommendation rule a person can read and change: "the highest quality that fits with
headroom and writes at least N tokens/s", N from Settings, speeds from the measured bandwidth."""

from __future__ import annotations

from tests.hub_fixtures import TINY_REPO


def _quant(page, file: str) -> str:
    return next(v.quant for v in page.table_model.variants if v.file == file)


def test_the_rule_is_shown_and_follows_the_setting(window, qtbot, hub):
    page = window.show_page("Models")
    page.open_repo(TINY_REPO)
    qtbot.waitUntil(lambda: page.advice is not None, timeout=120_000)
    assert "Rule: the highest quality that fits with headroom" in page.advice.reason
    assert "10 tokens/s" in page.advice.reason  # the default minimum
    assert "★ Recommended." in page.details.advice.text()
    # The tiny test model writes thousands of tokens/s: the best quality that fits is taken.
    assert _quant(page, page.advice.recommended) == "F16"
    assert set(page.speeds) == {v.file for v in page.table_model.variants}
    by_quant = {v.quant: v.file for v in page.table_model.variants}
    rates = page.speeds
    assert rates[by_quant["Q2_K"]] > rates[by_quant["Q4_K_M"]] > rates[by_quant["F16"]]
    # A minimum between F16's and Q8_0's estimate: Q8_0 is taken, and the reason says why.
    floor = round((rates[by_quant["F16"]] + rates[by_quant["Q8_0"]]) / 2)
    assert window.page("Settings").change("min_tokens_per_s", float(floor))
    assert window.context.settings.min_tokens_per_s == floor
    assert _quant(page, page.advice.recommended) == "Q8_0"
    assert "F16 is better quality and fits too" in page.advice.reason
    assert f"{floor} tokens/s" in page.advice.reason
    assert page.advice.alternative == by_quant["F16"]


def test_a_downloaded_variant_uses_its_measured_speed(window, qtbot, hub):
    from PySide6.QtCore import Qt

    from app.core import speed
    from app.ui.pages.models.table import COL_FIT

    page = window.show_page("Models")
    page.open_repo(TINY_REPO)
    qtbot.waitUntil(lambda: page.advice is not None, timeout=120_000)
    f16 = next(v for v in page.table_model.variants if v.quant == "F16")
    page.request_download(f16)
    item = window.page("Downloads").find_item(TINY_REPO, f16.file)
    qtbot.waitUntil(lambda: item.row.state == "done" and not item.active, timeout=60_000)
    # A comparison measured it far below the minimum on this machine (say, a busy one).
    speed.record_measured(item.last.model.path, 0.5)
    page.replan()
    qtbot.waitUntil(lambda: page.advice is not None, timeout=120_000)
    assert page.speeds[f16.file] == 0.5
    assert page.advice.recommended != f16.file
    assert "F16 is better quality and fits too, but would write only about 0.5" in (
        page.advice.reason
    )
    row = page.table_model.row_of(f16.file)
    tip = page.table_model.index(row, COL_FIT).data(Qt.ItemDataRole.ToolTipRole)
    assert "measured in a comparison" in tip

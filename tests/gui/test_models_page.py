"""The Models page on the Hub imitation: catalog, search, variants with fit badges, live re-plan."""

from __future__ import annotations

import dataclasses
import os

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QPushButton

from app.core.hardware import GpuInfo, detect
from app.core.hub import RepoSummary
from app.ui.pages.models.table import COL_ACTION, COL_FIT, COL_QUANT, fit_badge
from app.ui.widgets.badges import BADGE_ROLE
from tests.hub_fixtures import TINY_REPO

PLAN_TIMEOUT_MS = 120_000


def _wait_planned(qtbot, page, n_ctx: int | None = None) -> None:
    def done() -> bool:
        advice = page.advice
        return advice is not None and (n_ctx is None or advice.n_ctx == n_ctx)

    qtbot.waitUntil(done, timeout=PLAN_TIMEOUT_MS)


def test_catalog_is_listed_before_any_search(window):
    page = window.show_page("Models")
    assert page.repo_list.count() >= 10
    first = page.repo_list.item(0).text()
    assert "/" in first and "GGUF" in first.upper()


def test_search_lists_only_gguf_repos_from_the_hub(window, qtbot, hub):
    page = window.show_page("Models")
    page.search_box.setText("quantdesk")
    page.search()
    qtbot.waitUntil(lambda: not page.search_task.busy and "for" in page.list_status.text())
    names = [page.repo_list.item(i).text() for i in range(page.repo_list.count())]
    assert TINY_REPO in names and "other-org/notes" not in names
    assert page.catalog_button.isVisible()


def test_search_error_shows_a_message_and_the_page_keeps_working(window, qtbot, hub):
    page = window.show_page("Models")
    hub.fail(401, times=1, match="/api/models")  # 5xx would be retried by huggingface_hub
    page.search_box.setText("quantdesk")
    page.search()
    qtbot.waitUntil(lambda: "failed" in page.list_status.text(), timeout=60_000)
    assert "refused" in page.list_status.text() and "token" in page.list_status.text()
    page.show_catalog()
    assert page.repo_list.count() >= 10


def test_variants_show_badges_and_a_recommended_row(window, qtbot, hub):
    page = window.show_page("Models")
    page.open_repo(TINY_REPO)
    _wait_planned(qtbot, page)
    model = page.table_model
    quants = sorted(v.quant for v in model.variants)
    assert quants == ["F16", "Q2_K", "Q4_K_M", "Q8_0"]
    f16 = next(v for v in model.variants if v.quant == "F16")
    assert f16.shards == 3
    for row in range(model.rowCount()):
        verdict, text = model.index(row, COL_FIT).data(BADGE_ROLE)
        assert verdict in {"full_gpu", "partial_gpu", "cpu"}, text  # tiny model: fits anywhere
        assert isinstance(page.table.indexWidget(model.index(row, COL_ACTION)), QPushButton)
        fit = model.fit_at(row)
        assert fit is not None and fit.bits_per_weight > 1.5 and fit.offload.max_ctx > 0
    # The recommendation comes from the real recommender: a starred, bold row.
    rec = page.advice.recommended
    assert rec is not None
    row = model.row_of(rec)
    assert model.index(row, COL_QUANT).data().startswith("★")
    assert page.details.variant is not None and page.details.ram_bar.isVisible()
    assert "Weights" in page.details.ram_bar.summary()
    # Bits per weight rank like the quants do: the real header is read, not the file name.
    bpw = {model.variants[r].quant: model.fit_at(r).bits_per_weight for r in range(4)}
    assert bpw["Q2_K"] < bpw["Q4_K_M"] < bpw["Q8_0"] < bpw["F16"]


def test_context_control_replans_every_row_and_drops_stale_results(window, qtbot, hub):
    page = window.show_page("Models")
    page.open_repo(TINY_REPO)
    _wait_planned(qtbot, page)
    kv_before = {
        v.file: page.table_model.fits[v.file].offload.plan.kv_bytes
        for v in page.table_model.variants
    }
    # Two changes in a row: only the last one may end up on screen.
    page.set_context(1024)
    page.replan()
    page.set_context(2048)
    page.replan()
    _wait_planned(qtbot, page, 2048)
    qtbot.waitUntil(lambda: not page.busy, timeout=PLAN_TIMEOUT_MS)
    assert page.ctx_label.text() == "2K tokens"
    for variant in page.table_model.variants:
        fit = page.table_model.fits[variant.file]
        assert fit.n_ctx == 2048 and fit.offload.plan.n_ctx == 2048
        assert fit.offload.plan.kv_bytes != kv_before[variant.file]


def test_variant_that_does_not_fit_asks_before_downloading(window, qtbot, hub):
    # A 4 GB laptop as data (issue 3 plans against given profiles the same way): nothing fits
    # when only a few MB are free.
    profile = dataclasses.replace(detect(), ram_available_bytes=1 << 20, gpus=[])
    window.context.planner.set_profile(profile)
    page = window.show_page("Models")
    page.open_repo(TINY_REPO)
    _wait_planned(qtbot, page)
    assert page.advice.recommended is None
    variant = page.table_model.variants[0]
    assert fit_badge(page.table_model.fits[variant.file])[0] == "no_fit"
    asked: list[str] = []
    started: list[str] = []
    page.ask_confirmation = lambda v, fit: asked.append(v.file) or False
    downloads = window.page("Downloads")
    downloads.start_download = lambda v: started.append(v.file)
    page.request_download(variant)
    assert asked == [variant.file] and started == []  # declined: nothing queued
    page.ask_confirmation = lambda v, fit: True
    page.request_download(variant)
    assert started == [variant.file]


def test_unknown_repo_shows_an_error_with_retry(window, qtbot, hub):
    page = window.show_page("Models")
    page.open_repo("nobody/does-not-exist")
    qtbot.waitUntil(lambda: page.details.retry_button.isVisible(), timeout=60_000)
    assert "does not exist" in page.details.reason.text()


def test_compare_button_sends_the_downloaded_variants_to_compare(window, qtbot, hub):
    page = window.show_page("Models")
    page.open_repo(TINY_REPO)
    _wait_planned(qtbot, page)
    assert not page.compare_button.isEnabled()
    downloads = window.page("Downloads")
    for quant in ("Q2_K", "Q8_0"):
        variant = next(v for v in page.table_model.variants if v.quant == quant)
        page.request_download(variant)
        item = downloads.find_item(TINY_REPO, variant.file)
        qtbot.waitUntil(lambda i=item: i.row.state == "done" and not i.active, timeout=60_000)
    assert page.compare_button.isEnabled() and "2" in page.compare_button.text()
    buttons = {
        v.quant: page.table.indexWidget(page.table_model.index(r, COL_ACTION)).text()
        for r, v in enumerate(page.table_model.variants)
    }
    assert buttons == {
        "Q2_K": "In library",
        "Q8_0": "In library",
        "Q4_K_M": "Download",
        "F16": "Download",
    }
    page.compare_button.click()
    assert window.current_title() == "Compare"
    compare = window.page("Compare")
    assert sorted(os.path.basename(p) for p in compare.models()) == [
        "quantdesk-test-Q2_K.gguf",
        "quantdesk-test-Q8_0.gguf",
    ]


def test_metadata_from_the_hub_is_shown_as_plain_text(window):
    page = window.show_page("Models")
    hostile = RepoSummary("evil/model-GGUF", summary='<img src="http://x/y.png"><b>bold</b>')
    page._fill_repo_list([hostile])
    page.open_repo(hostile)
    assert page.repo_subtitle.textFormat() == Qt.TextFormat.PlainText
    assert page.repo_subtitle.text() == '<img src="http://x/y.png"><b>bold</b>'
    for label in page.findChildren(QLabel):
        assert label.textFormat() == Qt.TextFormat.PlainText, label.text()
    # Tooltips too: Qt renders a tooltip that looks like HTML as HTML, so it comes escaped.
    tip = page.repo_list.item(0).toolTip()
    assert "<b>" not in tip and "&lt;b&gt;bold&lt;/b&gt;" in tip


def test_offline_says_so_and_keeps_the_catalog(window, qtbot, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    page = window.show_page("Models")
    assert page.repo_list.count() >= 10  # the curated list needs no network
    page.repo_list.setCurrentRow(0)
    qtbot.waitUntil(lambda: page.details.retry_button.isVisible(), timeout=30_000)
    assert page.details.heading.text() == "You are offline"
    assert "Library" in page.details.reason.text()


def test_gpu_profile_shows_partial_offload_and_a_vram_bar(window, qtbot, hub):
    # A what-if GPU given as data (this VM has none): past the planner's 1 GiB margin, 10 MB
    # free -- room for the compute buffer (~6 MB at 4K with flash attention) and one layer of the
    # tiny model (8.1-8.3 MB with one layer, 12.5-14.5 MB with all), not all of them.
    gpu = GpuInfo("Test GPU", "cuda", 2 << 30, (1 << 30) + (10 << 20), "test")
    profile = dataclasses.replace(detect(), gpus=[gpu], llama_backends=["cpu", "cuda"])
    window.context.planner.set_profile(profile)
    page = window.show_page("Models")
    page.open_repo(TINY_REPO)
    _wait_planned(qtbot, page)
    badges = {
        page.table_model.variants[r].quant: page.table_model.index(r, COL_FIT).data(BADGE_ROLE)
        for r in range(page.table_model.rowCount())
    }
    verdicts = {v for v, _ in badges.values()}
    assert "partial_gpu" in verdicts, badges
    partial = next(text for v, text in badges.values() if v == "partial_gpu")
    assert partial.startswith("Partial GPU ") and partial.endswith(" layers") and "/" in partial
    row = next(
        r for r in range(4) if badges[page.table_model.variants[r].quant][0] == "partial_gpu"
    )
    page.table.selectRow(row)
    assert page.details.vram_bar.isVisible()
    assert (
        page.details.vram_bar.title == "GPU memory" and "Weights" in page.details.vram_bar.summary()
    )


def test_gated_repo_says_what_to_do(window, qtbot, hub):
    from tests.hub_fixtures import GATED_REPO

    page = window.show_page("Models")
    page.open_repo(GATED_REPO)
    _wait_planned(qtbot, page)
    [variant] = page.table_model.variants
    fit = page.table_model.fits[variant.file]
    assert "gated" in fit.error and "token" in fit.error
    assert page.table_model.index(0, COL_FIT).data(BADGE_ROLE)[0] == "unknown"
    page.table.selectRow(0)
    assert "gated" in page.details.reason.text()


def test_moving_the_context_over_a_split_model_sends_no_new_request(window, qtbot, hub):
    page = window.show_page("Models")
    page.open_repo(TINY_REPO)
    _wait_planned(qtbot, page)
    qtbot.waitUntil(lambda: not page.busy, timeout=PLAN_TIMEOUT_MS)
    f16 = next(v for v in page.table_model.variants if v.quant == "F16")
    assert f16.shards == 3
    shard_gets = [r for r in hub.requests if "/resolve/" in r[1] and "F16-0000" in r[1]]
    assert len(shard_gets) >= 3  # each shard's header was read once
    before = len(hub.requests)
    for n_ctx in (1024, 4096, 2048):  # three moves of the slider, each planned
        page.set_context(n_ctx)
        page.replan()
        _wait_planned(qtbot, page, n_ctx)
        qtbot.waitUntil(lambda: not page.busy, timeout=PLAN_TIMEOUT_MS)
        fit = page.table_model.fits[f16.file]
        assert fit.fit is not None and fit.offload.plan.n_ctx == n_ctx
    new = hub.requests[before:]
    assert new == [], new  # headers come from the planner's cache: no request at all

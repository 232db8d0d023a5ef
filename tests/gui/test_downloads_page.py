"""The Downloads page against the Hub imitation: verified download, pause/resume, cancel, errors
with retry, and unfinished downloads that reappear after the window is reopened."""

from __future__ import annotations

from app.core import hub as core_hub
from app.core.download import pending_downloads
from tests.hub_fixtures import TINY_REPO

Q4 = "quantdesk-test-Q4_K_M.gguf"
DONE_MS = 60_000


def _variant(quant_or_file: str) -> core_hub.Variant:
    return core_hub.pick_variant(core_hub.list_variants(TINY_REPO), quant_or_file)


def _wait_state(qtbot, item, *states: str, timeout: int = DONE_MS) -> None:
    """Until the row shows one of ``states`` and its task has ended (its last signal arrived)."""
    qtbot.waitUntil(lambda: item.row.state in states and not item.active, timeout=timeout)


def _wait_bytes(qtbot, item, nbytes: int) -> None:
    qtbot.waitUntil(
        lambda: item.last is not None and item.last.bytes_done >= nbytes, timeout=DONE_MS
    )


def test_download_is_verified_and_enters_the_library(make_window, qtbot, hub):
    window = make_window()
    page = window.show_page("Downloads")
    variant = _variant("Q4_K_M")
    with qtbot.waitSignal(window.context.events.library_changed, timeout=DONE_MS):
        item = page.start_download(variant)
        assert window.sidebar.item(2).text() == "Downloads  (1)"
    _wait_state(qtbot, item, "done")
    assert "verified (SHA-256)" in item.row.status.text()
    model = item.last.model
    assert model is not None and model.sha256 == [hub.sha256(TINY_REPO, Q4)]
    assert [m.path for m in page.library.list()] == [model.path]
    assert model.path.read_bytes()[:4] == b"GGUF"
    assert window.sidebar.item(2).text() == "Downloads"
    assert item.row.buttons["open"].isVisibleTo(item.row)


def test_split_model_downloads_all_shards(make_window, qtbot, hub):
    page = make_window().show_page("Downloads")
    item = page.start_download(_variant("F16"))
    _wait_state(qtbot, item, "done")
    assert len(item.last.model.files) == 3 and all(p.is_file() for p in item.last.model.files)


def test_pause_then_resume_continues_where_it_stopped(make_window, qtbot, hub):
    size = _variant(Q4).size_bytes
    hub.throttle(200_000)
    page = make_window().show_page("Downloads")
    item = page.start_download(_variant(Q4))
    _wait_bytes(qtbot, item, 150_000)
    item.pause()
    _wait_state(qtbot, item, "paused")
    assert not item.active and item.row.buttons["resume"].isVisibleTo(item.row)
    [pending] = pending_downloads(page.library)
    assert 0 < pending.bytes_done < size
    hub.throttle(None)
    item.start()
    _wait_state(qtbot, item, "done")
    # Resumed with Range from the partial file: nothing was fetched twice beyond a buffer or two.
    assert any(r and r.startswith("bytes=") and r != "bytes=0-" for r in hub.file_requests(Q4))
    assert hub.served(TINY_REPO, Q4) <= size + 256 * 1024


def test_cancel_stops_and_forgets_the_partial_file(make_window, qtbot, hub):
    hub.throttle(150_000)
    page = make_window().show_page("Downloads")
    item = page.start_download(_variant(Q4))
    _wait_bytes(qtbot, item, 100_000)
    item.cancel()
    qtbot.waitUntil(lambda: item not in page.items, timeout=DONE_MS)
    assert pending_downloads(page.library) == []
    assert page.empty.isVisibleTo(page)
    assert page.library.list() == []


def test_corrupted_download_shows_the_error_and_the_window_keeps_working(make_window, qtbot, hub):
    window = make_window()
    page = window.show_page("Downloads")
    hub.flip_byte(Q4, 5000)
    bad = page.start_download(_variant(Q4))
    _wait_state(qtbot, bad, "failed")
    text = bad.row.status.text()
    assert text.startswith("Failed:") and "SHA-256" in text and "nothing was added" in text
    assert bad.row.buttons["retry"].isVisibleTo(bad.row)
    assert page.library.list() == []
    # The window keeps working: other pages open, and another download succeeds.
    window.show_page("Models")
    window.show_page("Downloads")
    good = page.start_download(_variant("Q2_K"))
    _wait_state(qtbot, good, "done")
    assert len(page.library.list()) == 1


def test_refused_download_can_be_retried(make_window, qtbot, hub):
    page = make_window().show_page("Downloads")
    hub.fail(403, times=1, match=Q4)
    item = page.start_download(_variant(Q4))
    _wait_state(qtbot, item, "failed")
    assert "refused" in item.row.status.text() and "token" in item.row.status.text()
    item.row.buttons["retry"].click()
    _wait_state(qtbot, item, "done")


def test_unfinished_download_reappears_after_restart_and_resumes(make_window, qtbot, hub):
    hub.throttle(200_000)
    first = make_window()
    item = first.show_page("Downloads").start_download(_variant(Q4))
    _wait_bytes(qtbot, item, 150_000)
    first.close()  # pauses every transfer; the partial file stays
    assert not first.context.runner.active
    hub.throttle(None)
    second = make_window()
    page = second.show_page("Downloads")
    qtbot.waitUntil(lambda: page.find_item(TINY_REPO, Q4) is not None, timeout=DONE_MS)
    again = page.find_item(TINY_REPO, Q4)
    assert again.row.state == "paused" and "Paused at" in again.row.status.text()
    assert again.row.bar.value() > 0
    again.start()
    _wait_state(qtbot, again, "done")
    assert again.last.model.sha256 == [hub.sha256(TINY_REPO, Q4)]


def test_third_download_waits_its_turn_then_runs(make_window, qtbot, hub):
    from app.ui.pages.downloads import MAX_PARALLEL

    assert MAX_PARALLEL == 2
    hub.throttle(400_000)
    window = make_window()
    page = window.show_page("Downloads")
    items = [page.start_download(_variant(q)) for q in ("Q2_K", "Q4_K_M", "Q8_0")]
    assert [i.row.state for i in items] == ["starting", "starting", "queued"]
    assert window.sidebar.item(2).text() == "Downloads  (3)"
    for item in items:
        _wait_state(qtbot, item, "done")
    assert len(page.library.list()) == 3 and not page.queue


def test_cancelling_a_queued_download_removes_it(make_window, qtbot, hub):
    hub.throttle(200_000)
    page = make_window().show_page("Downloads")
    items = [page.start_download(_variant(q)) for q in ("Q2_K", "Q4_K_M", "Q8_0")]
    queued = items[2]
    queued.cancel()
    assert queued not in page.items and not page.queue
    for item in items[:2]:
        item.cancel()
    qtbot.waitUntil(lambda: not page.items, timeout=DONE_MS)

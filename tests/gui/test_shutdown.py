"""Closing the window at any moment leaves no thread and no process behind.

Measured, not assumed: the OS thread count of this process, the Python threads, and the child
processes (also checked by the autouse ``no_leaked_processes`` fixture) go back to what they were
before the window opened, while a download, a reply and a plan were all running.
"""

from __future__ import annotations

import threading

import psutil
import pytest
from PySide6.QtCore import QCoreApplication, QEvent, QThreadPool
from PySide6.QtWidgets import QApplication

from app.core import hub as core_hub
from app.core.download import pending_downloads
from app.core.library import Library
from app.ui.bridge import THREAD_NAME
from app.ui.main_window import PAGES, MainWindow
from tests.hub_fixtures import TINY_REPO

SLOW_MS = 120_000


def _ours(thread: threading.Thread) -> bool:
    # The Hub imitation serves each connection in a thread of its own; those are the server's.
    # Qt's pool threads appear as "dummy" threads that Python never forgets (they are counted
    # at the OS level instead).
    dummy = isinstance(thread, threading._DummyThread)
    return thread.is_alive() and not dummy and "process_request_thread" not in thread.name


@pytest.fixture(autouse=True)
def qt_global_pool_threads_exit_when_idle():
    """Idle threads of Qt's global pool linger 30 s: end them at once."""
    pool = QThreadPool.globalInstance()
    before = pool.expiryTimeout()
    pool.setExpiryTimeout(0)
    yield
    pool.setExpiryTimeout(before)


def _delete(win: MainWindow) -> None:
    win.close()
    win.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    QApplication.processEvents()


def _os_thread_names() -> list[str]:
    # The Hub imitation's connection threads (idle keep-alive connections of the HTTP client's
    # pool keep them waiting) belong to the test server, not to the app.
    server = {t.native_id for t in threading.enumerate() if "process_request_thread" in t.name}
    names = []
    for t in psutil.Process().threads():
        if t.id in server:
            continue
        try:
            with open(f"/proc/self/task/{t.id}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            names.append(str(t.id))
    return names


def _os_threads() -> int:
    """OS threads of this process, less the idle ones of Qt's internal image-scaling pool (they
    linger 30 s; ours are named after the task runner, so they are still counted)."""
    return sum(1 for name in _os_thread_names() if name != "Thread (pooled)")


def _settle_counts(qtbot, os_before: int, py_before: set[threading.Thread]) -> None:
    def settled() -> bool:
        extra = [t for t in threading.enumerate() if t not in py_before and _ours(t)]
        return not extra and _os_threads() <= os_before and THREAD_NAME not in _os_thread_names()

    try:
        qtbot.waitUntil(settled, timeout=15_000)
    except Exception:
        extra = [t.name for t in threading.enumerate() if t not in py_before and _ours(t)]
        raise AssertionError(
            f"threads left: OS {_os_threads()} (before {os_before}: "
            f"{_os_thread_names()}), Python {extra}"
        ) from None


def test_closing_during_download_generation_and_planning_leaves_nothing(qtbot, hub, tiny_models):
    # Warm-up: Qt starts a few process-wide threads once (fonts, the offscreen platform).
    warm = MainWindow()
    warm.show()
    for title, _ in PAGES:
        warm.show_page(title)
    _delete(warm)
    os_before = _os_threads()
    py_before = set(threading.enumerate())
    children_before = psutil.Process().children(recursive=True)

    win = MainWindow()
    win.show()
    hub.throttle(100_000)  # slow enough that the download is mid-way when the window closes
    downloads = win.show_page("Downloads")
    variant = core_hub.pick_variant(core_hub.list_variants(TINY_REPO), "Q8_0")
    item = downloads.start_download(variant)
    qtbot.waitUntil(lambda: item.last is not None and item.last.bytes_done > 0, timeout=SLOW_MS)
    models = win.show_page("Models")
    models.open_repo(TINY_REPO)  # planning: header reads and the dry-run engine child
    chat = win.show_page("Chat")
    chat.auto_fit.setChecked(False)
    chat.ctx_box.setValue(4096)
    chat.choose_model(tiny_models["Q4_K_M"], load=False)
    chat.ignore_eos = True
    chat.options.max_tokens.setValue(5000)
    chat.composer.setPlainText("Go on and on")
    chat.send()
    # Close right after the reply started (the tiny model writes ~2000 tokens a second).
    qtbot.waitUntil(lambda: chat._reply_pieces >= 3, timeout=SLOW_MS)
    assert item.active and chat.generating
    engines = [p for p in psutil.Process().children(recursive=True) if p not in children_before]
    assert engines, "expected engine processes while generating"

    _delete(win)

    assert psutil.wait_procs(engines, timeout=10)[1] == []  # every engine child has exited
    _settle_counts(qtbot, os_before, py_before)
    # The interrupted download was paused, not lost: it resumes next time.
    [pending] = pending_downloads(Library())
    assert pending.variant.file == variant.file and pending.bytes_done > 0


def test_closing_an_idle_window_leaves_no_thread(qtbot):
    warm = MainWindow()
    warm.show()
    _delete(warm)
    os_before = _os_threads()
    py_before = set(threading.enumerate())
    win = MainWindow()
    win.show()
    for title, _ in PAGES:
        win.show_page(title)
    qtbot.waitUntil(lambda: not win.context.runner.active, timeout=SLOW_MS)
    _delete(win)
    _settle_counts(qtbot, os_before, py_before)

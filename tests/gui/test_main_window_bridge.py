"""The bridge between core generators and the GUI: items become signals on the GUI thread,
failures carry their message, cancel reaches the work, stale results are dropped, shutdown waits."""

from __future__ import annotations

import threading
import time

import pytest
from PySide6.QtCore import QObject, QThread

from app.ui.bridge import THREAD_NAME, LatestTask, TaskRunner


@pytest.fixture
def runner(qtbot):
    owner = QObject()
    run = TaskRunner(owner)
    yield run
    assert run.shutdown(5000)


def test_items_arrive_in_order_on_the_gui_thread(qtbot, runner):
    seen: list[tuple[int, bool]] = []
    worker_threads: list[str] = []

    def work(token):
        worker_threads.append(threading.current_thread().name)
        yield from range(50)

    gui = QThread.currentThread()
    task = runner.run(work, on_item=lambda i: seen.append((i, QThread.currentThread() is gui)))
    qtbot.waitUntil(lambda: len(seen) == 50 and task.done.is_set(), timeout=5000)
    assert [i for i, _ in seen] == list(range(50)) and all(on_gui for _, on_gui in seen)
    assert worker_threads and worker_threads[0] != threading.main_thread().name
    assert runner.pool.objectName() == THREAD_NAME


def test_a_failure_carries_its_message(qtbot, runner):
    def work(token):
        yield 1
        raise ValueError("the file is not a GGUF model")

    failures: list[str] = []
    task = runner.run(work, on_failed=lambda msg, exc: failures.append(msg))
    qtbot.waitUntil(lambda: failures == ["the file is not a GGUF model"], timeout=5000)
    assert task.done.is_set()


def test_cancel_reaches_the_work_and_ends_it_normally(qtbot, runner):
    started = threading.Event()
    hooked: list[bool] = []

    def work(token):
        started.set()
        while not token.cancelled:
            time.sleep(0.01)
            yield "tick"
        raise RuntimeError("interrupted")  # an exception after our own cancel is no failure

    failed: list[str] = []
    task = runner.run(work, on_failed=lambda m, e: failed.append(m))
    task.on_cancel = lambda: hooked.append(True)
    assert started.wait(5)
    with qtbot.waitSignal(task.finished, timeout=5000):
        task.cancel()
    assert hooked == [True] and failed == []


def test_latest_task_drops_results_of_a_superseded_task(qtbot, runner):
    owner = QObject()
    latest = LatestTask(runner, owner)
    got: list[str] = []
    latest.item_produced.connect(got.append)
    release = threading.Event()

    def slow(token):
        release.wait(5)
        yield "stale"  # arrives after the newer task started: must not be shown

    def fast(token):
        yield "fresh"

    latest.start(slow)
    assert latest.busy
    latest.start(fast)
    qtbot.waitUntil(lambda: got == ["fresh"] and not latest.busy, timeout=5000)
    release.set()
    assert runner.pool.waitForDone(5000)
    qtbot.wait(50)
    assert got == ["fresh"]


def test_shutdown_cancels_running_work_and_waits_for_it(qtbot):
    owner = QObject()
    run = TaskRunner(owner)
    ended = threading.Event()

    def endless(token):
        while not token.cancelled:
            time.sleep(0.01)
            yield None
        ended.set()

    for _ in range(3):
        run.run(endless)
    qtbot.waitUntil(lambda: run.pool.activeThreadCount() == 3, timeout=5000)
    assert run.shutdown(5000)
    assert ended.is_set() and not run.active and run.pool.activeThreadCount() == 0

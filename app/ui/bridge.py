"""Run core generators off the GUI thread and turn their items into Qt signals.

Core code does long work as generators (download progress, tokens, plans).  :class:`Task` runs one in
a worker thread from a shared pool; each yielded item becomes ``item_produced``, the end becomes
``finished`` or ``failed``.  Signals are queued to the GUI thread, so slots run there.  Handlers
connected to a Task should belong to a widget: when the widget is deleted, Qt drops the connection,
so a late result never touches a dead widget.

:class:`TaskRunner` owns all tasks of the window and, on shutdown, cancels them and waits for them.
:class:`LatestTask` keeps only the newest task of one kind (live re-plans): starting one cancels the
previous one, and results of a superseded task are dropped.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from app.core.cancel import CancelToken

__all__ = ["CancelToken", "LatestTask", "Task", "TaskRunner"]

THREAD_NAME = "quantdesk-task"


class Task(QObject):
    """One unit of background work.

    Signals:
        item_produced(object): each item the generator yields (or a function's return value).
        finished(): the work ended normally (also after a cancel that the generator honoured).
        failed(str, object): the work raised; the message and the exception.
    """

    item_produced = Signal(object)
    finished = Signal()
    failed = Signal(str, object)

    def __init__(self, work: Callable[[CancelToken], Iterable[Any] | Any], name: str = "") -> None:
        super().__init__()
        self.work = work
        self.name = name
        self.token = CancelToken()
        self.done = threading.Event()
        self.on_cancel: Callable[[], None] | None = None  # e.g. Engine.cancel

    def cancel(self) -> None:
        self.token.cancel()
        if self.on_cancel is not None:
            self.on_cancel()

    def run_here(self) -> None:
        """Run the work in the calling thread (the pool calls this; tests may too)."""
        try:
            result = self.work(self.token)
            if hasattr(result, "__next__"):
                for item in result:
                    self.item_produced.emit(item)
            elif result is not None:
                self.item_produced.emit(result)
            self.finished.emit()
        except Exception as exc:  # the GUI shows the message; the traceback goes to stderr
            if self.token.cancelled:
                # Work interrupted by our own cancel often ends in an exception; that is no failure.
                self.finished.emit()
                return
            if not hasattr(exc, "kind"):
                # HubError, EngineError... carry a ``kind`` and a message written for people;
                # anything else is unexpected and its traceback goes to stderr.
                traceback.print_exc()
            self.failed.emit(str(exc) or type(exc).__name__, exc)
        finally:
            self.done.set()


class _Runnable(QRunnable):
    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task
        self.setAutoDelete(True)

    def run(self) -> None:
        self.task.run_here()


class TaskRunner(QObject):
    """Starts tasks on a thread pool and shuts them all down together."""

    def __init__(self, parent: QObject | None = None, max_threads: int = 16) -> None:
        super().__init__(parent)
        # A child of the runner: deleting the window deletes the pool, which joins its threads.
        self.pool = QThreadPool(self)
        # Qt names the pool's OS threads after it: visible in debuggers, ps -T, and leak tests.
        self.pool.setObjectName(THREAD_NAME)
        self.pool.setMaxThreadCount(max_threads)
        self._tasks: set[Task] = set()
        self._lock = threading.Lock()

    def start(self, task: Task) -> Task:
        with self._lock:
            self._tasks.add(task)
        task.finished.connect(lambda t=task: self._forget(t))
        task.failed.connect(lambda *_a, t=task: self._forget(t))
        self.pool.start(_Runnable(task))
        return task

    def run(
        self,
        work: Callable[[CancelToken], Any],
        name: str = "",
        *,
        on_item: Callable[[Any], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        on_failed: Callable[[str, object], None] | None = None,
    ) -> Task:
        """Start ``work``; handlers given here are connected before it starts, so none is missed.

        (Connecting to the returned task afterwards races with a fast task.)  Pass bound methods
        of a QObject (a widget), so Qt drops the connection if the widget goes first.
        """
        task = Task(work, name)
        if on_item is not None:
            task.item_produced.connect(on_item)
        if on_finished is not None:
            task.finished.connect(on_finished)
        if on_failed is not None:
            task.failed.connect(on_failed)
        return self.start(task)

    def _forget(self, task: Task) -> None:
        with self._lock:
            self._tasks.discard(task)

    @property
    def active(self) -> list[Task]:
        with self._lock:
            return [t for t in self._tasks if not t.done.is_set()]

    def shutdown(self, timeout_ms: int = 15000) -> bool:
        """Cancel every task and wait for the pool; True when all threads ended in time."""
        for task in self.active:
            task.cancel()
        return self.pool.waitForDone(timeout_ms)


class LatestTask(QObject):
    """Runs one task at a time for one purpose; a new start supersedes (and cancels) the old one.

    Connect to this object's signals instead of the task's: they fire only for the current task,
    so a slow, stale result can never overwrite a newer one.

    Signals:
        item_produced(object): an item from the current task.
        finished(): the current task ended normally.
        failed(str, object): the current task raised.
    """

    item_produced = Signal(object)
    finished = Signal()
    failed = Signal(str, object)

    def __init__(self, runner: TaskRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.current: Task | None = None

    def start(self, work: Callable[[CancelToken], Any], name: str = "") -> Task:
        self.cancel()
        task = Task(work, name)
        self.current = task
        # Bound methods of this QObject: Qt drops the connections when the owner page goes away.
        task.item_produced.connect(self._on_item)
        task.finished.connect(self._on_finished)
        task.failed.connect(self._on_failed)
        return self.runner.start(task)

    def cancel(self) -> None:
        if self.current is not None:
            self.current.cancel()
            self.current = None

    @property
    def busy(self) -> bool:
        """True until the current task's last signal has been delivered (not just emitted)."""
        return self.current is not None

    def _is_current(self) -> bool:
        return self.current is not None and self.sender() is self.current

    @Slot(object)
    def _on_item(self, item: Any) -> None:
        if self._is_current():
            self.item_produced.emit(item)

    @Slot()
    def _on_finished(self) -> None:
        if self._is_current():
            self.current = None
            self.finished.emit()

    @Slot(str, object)
    def _on_failed(self, message: str, exc: object) -> None:
        if self._is_current():
            self.current = None
            self.failed.emit(message, exc)

"""Keep PySide6 6.12 from freeing ``None``/``True``/``False`` on CPython < 3.12.

The PySide6 6.12.0 wheels return ``None`` from every void method (``setText``, ``setVisible``,
``start``...) and ``True`` from ``Signal.emit()`` without owning a reference -- harmless where these
objects are immortal (CPython 3.12+), fatal on 3.10/3.11: each call made from Python lowers the
count by one, and after some thousands of calls (one long streamed reply, a big table) CPython
aborts with "Fatal Python error: none_dealloc" (or ``bool_dealloc``).  Calls Qt makes itself
(painting, layouts, clicks) are not affected.

The guard measures whether this build leaks; if it does, it raises the counts of the three objects
well above what can leak between two checks and keeps them there from a timer on the application.
The references are never given back: these objects live as long as the interpreter anyway, and
giving them back at exit would free them during finalization.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QCoreApplication, QObject, QTimer, Signal

FLOOR = 1 << 20  # references kept in hand: more than any burst of calls between two checks
CHECK_MS = 200
_SINGLETONS = (None, True, False)
_leaks: bool | None = None


class _Probe(QObject):
    ping = Signal()


def _add_refs(obj: object, n: int) -> None:
    # ob_refcnt is the first field of every object on CPython < 3.12 (checked by emit_leaks).
    # Other threads may touch the count between the read and the write: an error of a few
    # references either way, negligible against FLOOR.
    cell = ctypes.c_ssize_t.from_address(id(obj))
    cell.value += n


def emit_leaks() -> bool:
    """Whether this PySide6 build drops references to None/True (measured once)."""
    global _leaks
    if _leaks is None:
        if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
            _leaks = False  # immortal objects: nothing to guard
            return _leaks
        probe = _Probe()
        before = sys.getrefcount(True), sys.getrefcount(None)
        for _ in range(64):
            probe.ping.emit()
            probe.setObjectName("probe")
        after = sys.getrefcount(True), sys.getrefcount(None)
        _leaks = after[0] <= before[0] - 64 or after[1] <= before[1] - 64
        if _leaks:
            top_up()
    return _leaks


def top_up() -> None:
    """Raise each count back to twice :data:`FLOOR` when calls have drained it below FLOOR."""
    for obj in _SINGLETONS:
        have = sys.getrefcount(obj)
        if have < FLOOR:
            _add_refs(obj, 2 * FLOOR - have)


def install() -> None:
    """Start the guard (idempotent; call once a QCoreApplication exists)."""
    if not emit_leaks():
        return
    top_up()
    app = QCoreApplication.instance()
    if app is None or app.property("quantdesk_refcount_guard"):
        return
    timer = QTimer(app)
    timer.setInterval(CHECK_MS)
    timer.timeout.connect(top_up)
    timer.start()
    app.setProperty("quantdesk_refcount_guard", True)

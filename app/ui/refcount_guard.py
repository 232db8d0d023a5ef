"""Keep PySide6's signal emits from freeing ``True`` (a reference-count bug, CPython < 3.12).

PySide6 6.12's ``SignalInstance.emit()`` returns ``True`` without owning a reference, so every
emit made from Python lowers True's reference count by one.  On CPython 3.10/3.11 (where True is not
immortal) the interpreter aborts with "Fatal Python error: bool_dealloc" after about a thousand
emits -- one streamed reply of a few hundred tokens through :class:`app.ui.bridge.Task`, which
emits once per token.  Signals emitted by Qt itself (clicks, timers) are not affected.

The guard adds references to ``True`` (never released: True is never freed anyway) and tops them
up from a timer on the application, so the count can never run down.  It measures the leak first and does nothing where
emits are correct (fixed PySide6, CPython 3.12+).
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QCoreApplication, QObject, QTimer, Signal

FLOOR = 1 << 15  # far more emits than can happen between two checks
CHECK_MS = 250
_leaks: bool | None = None
_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = [ctypes.py_object]
_incref.restype = None


def _add_true_refs(n: int) -> None:
    # Held by nobody on purpose: a list holding them would give them back at exit, and the
    # emits' missing references would then free True during finalization.
    for _ in range(n):
        _incref(True)


class _Probe(QObject):
    ping = Signal()


def emit_leaks() -> bool:
    """Whether ``emit()`` drops a reference to True here (measured once)."""
    global _leaks
    if _leaks is None:
        probe = _Probe()
        before = sys.getrefcount(True)
        for _ in range(64):
            probe.ping.emit()
        _leaks = sys.getrefcount(True) <= before - 64
        if _leaks:
            _add_true_refs(64)  # give back what the probe took
    return _leaks


def top_up() -> None:
    """Bring True's reference count back above :data:`FLOOR` when emits have drained it."""
    have = sys.getrefcount(True)
    if have < FLOOR:
        _add_true_refs(2 * FLOOR - have)


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

"""The one cancellation token of the app: downloads, plans, comparisons and GUI tasks share it.

A :class:`CancelToken` is a ``threading.Event`` with a ``reason`` (``cancelled`` or ``paused``: a
paused download keeps its partial file), so any code that waits on an Event can wait on it too.
"""

from __future__ import annotations

import threading


class CancelToken(threading.Event):
    """Set once to stop work at its next step; ``reason`` says why."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = "cancelled"

    def cancel(self) -> None:
        self.reason = "cancelled"
        self.set()

    def pause(self) -> None:
        self.reason = "paused"
        self.set()

    @property
    def cancelled(self) -> bool:
        return self.is_set()

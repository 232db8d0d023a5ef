"""Long sessions must not crash the interpreter through a Qt binding's reference-count bug.

PySide6 6.12.0 on CPython < 3.12 drops a reference to True per ``emit()`` and to None per void
method call; the process aborts ("bool_dealloc" / "none_dealloc") after some hundreds of streamed
tokens.  pyproject.toml pins PySide6 below 6.12 for that reason; this test fails on a binding with
the bug.  The script runs in a subprocess so a regression shows as a failed test instead of killing
the test run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication, QLabel
    app = QApplication([])
    from app.ui.bridge import Task
    received = []
    sink = received.append
    if "--chat-view" in sys.argv:
        from app.ui.pages.chat.view import ChatView
        view = ChatView()
        view.begin_stream(1)
        sink = view.append_token
    label = QLabel()
    for _chunk in range(10):
        task = Task(lambda token: (f"t{i} " for i in range(2000)))
        task.item_produced.connect(sink)
        task.run_here()
        for i in range(4000):  # void calls, as a busy page makes them
            label.setText("x")
        app.processEvents()
    if "--chat-view" in sys.argv:
        view.end_stream(None, "")
        received = view.messages[-1].text.split()
    print("survived", len(received))
    """
)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=120
    )


def test_twenty_thousand_tokens_and_forty_thousand_calls_survive():
    out = _run("--chat-view")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "survived 20000" in out.stdout

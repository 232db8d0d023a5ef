"""The Settings page's Workers list: stored addresses, a live probe of a real loopback worker."""

from __future__ import annotations

import json

from app.core import paths, rpc
from app.ui.main_window import MainWindow


def test_workers_list_probes_a_live_and_a_dead_worker(qtbot):
    port, dead = rpc.free_port(), rpc.free_port()
    proc = rpc.start_worker(port, mem=300_000_000)
    win = MainWindow()
    qtbot.addWidget(win)
    try:
        page = win.show_page("Settings")
        page.workers.setText(f"127.0.0.1:{port}, 127.0.0.1:{dead}")
        page.workers.editingFinished.emit()
        stored = json.loads(paths.settings_path().read_text())
        assert stored["workers"] == f"127.0.0.1:{port},127.0.0.1:{dead}"
        qtbot.waitUntil(lambda: page.check_workers.isEnabled(), timeout=30_000)
        text = page.workers_status.text()
        assert (
            f"✓ 127.0.0.1:{port}: RPC0, 300.0 MB free of 300.0 MB" in text
            and "ms round trip" in text
        )
        assert f"✗ 127.0.0.1:{dead}: connection refused" in text
        # A malformed address is refused in words and the stored list stays.
        page.workers.setText("127.0.0.1:notaport")
        page.workers.editingFinished.emit()
        assert "Not saved" in page.message.text() and "port is not a number" in page.message.text()
        assert json.loads(paths.settings_path().read_text())["workers"] == stored["workers"]
    finally:
        win.close()
        proc.kill()
        proc.wait(10)

"""The Server page in a real window (offscreen): start, serve a request, show it, stop; closing the
window stops a running server and its engines."""

from __future__ import annotations

import socket

import psutil
from openai import OpenAI

from app.server.config import ServerOptions
from app.ui.main_window import MainWindow
from tests.server.conftest import name_of


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _sidebar_text(window: MainWindow) -> str:
    titles = [window.sidebar.item(i).text() for i in range(window.sidebar.count())]
    return next(t for t in titles if t.startswith("Server"))


def test_page_starts_serves_and_stops(qtbot, planner, library, tiny_files):
    window = MainWindow(planner=planner)
    qtbot.addWidget(window)
    window.show()
    page = window.show_page("Server")
    assert page.start_button.text() == "Start" and _sidebar_text(window) == "Server"
    page.start(ServerOptions(port=0, n_threads=1, idle_ttl_s=0))
    qtbot.waitUntil(lambda: page.running and page.start_button.text() == "Stop", timeout=30000)
    server = page.server
    assert page.address.text() == server.base_url
    assert "on" in _sidebar_text(window)
    assert not page.host_edit.isEnabled()  # the address cannot change under a running server
    from app.core.settings import Settings

    assert Settings.load().server_idle_ttl_s == 0  # the TTL that was used is kept for next time

    with OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=60) as c:
        out = c.completions.create(
            model=name_of(tiny_files["Q8_0"]), prompt="The sea", max_tokens=8
        )
    assert out.choices[0].text is not None
    qtbot.waitUntil(lambda: page.log_table.rowCount() == 1, timeout=10000)
    assert page.log_table.item(0, 2).text() == name_of(tiny_files["Q8_0"])
    assert page.log_table.item(0, 3).text() == "200"
    qtbot.waitUntil(lambda: page.models_table.rowCount() == 1, timeout=10000)
    pids = server.pool.engine_pids()
    assert len(pids) == 1

    page.toggle()  # Stop
    qtbot.waitUntil(lambda: page.server is None and page.start_button.isEnabled(), timeout=30000)
    assert page.start_button.text() == "Start" and _sidebar_text(window) == "Server"
    assert not _listening(server.port)
    assert not psutil.pid_exists(pids[0]) or psutil.Process(pids[0]).status() == "zombie"
    window.close()


def test_a_taken_port_is_explained(qtbot, planner, library):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        window = MainWindow(planner=planner)
        qtbot.addWidget(window)
        page = window.show_page("Server")
        page.start(ServerOptions(port=port, n_threads=1))
        qtbot.waitUntil(lambda: page.error_box.count() == 1, timeout=30000)
        assert page.server is None and page.start_button.text() == "Start"
        window.close()


def test_public_address_without_key_is_refused(qtbot, planner, library):
    window = MainWindow(planner=planner)
    qtbot.addWidget(window)
    page = window.show_page("Server")
    page.host_edit.setText("0.0.0.0")
    page.toggle()
    qtbot.waitUntil(lambda: page.error_box.count() == 1, timeout=30000)
    assert page.server is None
    window.close()


def test_closing_the_window_stops_the_server(qtbot, planner, library, tiny_files):
    window = MainWindow(planner=planner)
    qtbot.addWidget(window)
    window.show()
    page = window.show_page("Server")
    page.start(ServerOptions(port=0, n_threads=1, idle_ttl_s=0))
    qtbot.waitUntil(lambda: page.running, timeout=30000)
    server = page.server
    with OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=60) as c:
        c.completions.create(model=name_of(tiny_files["Q8_0"]), prompt="hi", max_tokens=2)
    pid = server.pool.engine_pids()[0]
    window.close()
    assert not server.running and not _listening(server.port)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"

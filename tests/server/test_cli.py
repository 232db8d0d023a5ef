"""``quantdesk serve`` as a user runs it: refuses unsafe options, serves the library, stops on Ctrl+C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from tests.server.conftest import http

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "app", "serve", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_refuses_a_public_address_without_a_key():
    proc = _serve("--host", "0.0.0.0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "without an API key" in err and "--api-key" in err


def test_serves_the_library_and_stops_on_ctrl_c(library):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _serve("--port", str(port), "--threads", "1", "--api-key", "k1")
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = http("GET", base + "/health")
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert status == 200 and body["status"] == "ok"
        assert http("GET", base + "/v1/models")[0] == 401  # the key is required
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/v1" in err and "3 models" in err

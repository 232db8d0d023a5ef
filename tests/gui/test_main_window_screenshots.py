"""``quantdesk screenshots DIR``: one PNG per page at 1280x800, and a streamed chat reply."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from PySide6.QtGui import QImage

from app.core.chats import ChatStore
from app.core.library import Library
from app.ui.main_window import PAGES


def test_screenshots_command_writes_every_page_with_a_chat_reply(
    tmp_path, quantdesk_home, tiny_models
):
    for _ in Library().import_file(tiny_models["Q4_K_M"]):
        pass
    out = tmp_path / "shots"
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "QUANTDESK_HOME": str(quantdesk_home),
        "HF_HUB_OFFLINE": "1",  # the Models page says "offline" instead of reaching the real Hub
    }
    result = subprocess.run(
        [sys.executable, "-m", "app", "screenshots", str(out), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    files = json.loads(result.stdout)["files"]
    assert [os.path.basename(f) for f in files] == [
        f"{i:02d}-{title.lower()}.png" for i, (title, _) in enumerate(PAGES, start=1)
    ]
    for f in files:
        image = QImage(f)
        assert (image.width(), image.height()) == (1280, 800), f
    # The Chat page got one streamed reply, stored like any other conversation.
    [conversation] = ChatStore().conversations()
    roles = [m.role for m in ChatStore().messages(conversation.id)]
    assert roles == ["user", "assistant"]


def test_screenshots_rejects_a_bad_size(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "app", "screenshots", str(tmp_path), "--size", "big"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "1280x800" in result.stderr
    assert list(tmp_path.iterdir()) == []

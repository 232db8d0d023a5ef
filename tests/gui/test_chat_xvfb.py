"""Chat replies are visible whatever their length, checked under a real X server (Xvfb).

The offscreen platform did not catch issue 12's vanishing one-line replies, so this test starts its
own ``Xvfb`` (skipped only when it is not installed) and runs the body in a child process on the
``xcb`` platform: the real main window, the real engine on the tiny generated model, and a
:class:`ChatView` fed with known text.  For a one-word reply, a one-line reply and a long one it
records, while streaming and after, each assistant bubble's rendered text, its height against the
font's line height, and whether text pixels were painted; the parent asserts on the numbers.

Run by hand: ``python -m tests.gui.test_chat_xvfb OUT.json MODEL.gguf`` on any X display.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ONE_WORD = "Paris"
ONE_LINE = "The capital of France is Paris."
LONG = "\n\n".join(f"Paragraph {i}: " + " ".join(f"word{j}" for j in range(60)) for i in range(6))


@pytest.fixture
def xvfb_display():
    """A private Xvfb display (its number picked by Xvfb itself), stopped afterwards."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    read, write = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(write)
    try:
        number = b""
        import select

        while not number.endswith(b"\n"):
            ready, _, _ = select.select([read], [], [], 20)
            chunk = os.read(read, 16) if ready else b""
            if not chunk:
                stderr = proc.stderr.read().decode(errors="replace") if proc.poll() else ""
                pytest.fail(f"Xvfb did not start: {stderr[-2000:]}")
            number += chunk
        yield f":{number.decode().strip()}"
    finally:
        os.close(read)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_replies_of_every_length_are_visible_under_a_real_x_server(
    xvfb_display, tmp_path, quantdesk_home, tiny_models
):
    out = tmp_path / "heights.json"
    env = {
        **os.environ,
        "DISPLAY": xvfb_display,
        "QT_QPA_PLATFORM": "xcb",
        "QUANTDESK_HOME": str(quantdesk_home),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("WAYLAND_DISPLAY", None)
    result = subprocess.run(
        [sys.executable, "-m", "tests.gui.test_chat_xvfb", str(out), str(tiny_models["Q8_0"])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    data = json.loads(out.read_text())
    assert data["platform"] == "xcb"
    line = data["line_height"]

    # Known text through the view: what is shown is the reply, one line tall for the short ones.
    known = {c["name"]: c for c in data["view"]}
    for name, text in (("one_word", ONE_WORD), ("one_line", ONE_LINE), ("long", LONG)):
        case = known[name]
        for when in ("streaming", "ended"):
            shot = case[when]
            assert shot["shown"].split() == text.split(), (name, when, shot)
            assert shot["painted"] > 0, (name, when, shot)
            if name == "long":
                assert shot["height"] >= 6 * line, (name, when, shot)
            else:
                assert line <= shot["height"] < 2.5 * line, (name, when, shot)

    # Real replies from the engine through the page: every bubble shows its text.
    replies = data["page"]
    assert [r["tokens"] for r in replies] == [1, 4, 300]
    for reply in replies:
        assert reply["text"].strip(), reply
        for when in ("streaming", "ended"):
            shot = reply[when]
            assert shot["height"] >= line, (reply["tokens"], when, shot)
            assert shot["shown"].strip(), (reply["tokens"], when, shot)
            assert shot["painted"] > 0, (reply["tokens"], when, shot)
    assert replies[2]["ended"]["height"] > 3 * line  # the long one really is long


# ---- the body, run in the child process on the X display ----------------------------------------


def _snapshot(widget: Any) -> dict[str, Any]:
    """What a bubble shows: its text as rendered, its height, and dark pixels painted."""
    from PySide6.QtGui import QColor

    bodies = [widget.stable, widget.tail]
    height = sum(b.height() for b in bodies if b.isVisible())
    shown = "\n".join(b.document().toPlainText() for b in bodies if b.height() > 0)
    painted = 0
    for body in bodies:
        if body.height() <= 0 or not body.isVisible():
            continue
        image = body.grab().toImage()
        for y in range(0, image.height(), 2):
            for x in range(0, min(image.width(), 400), 2):
                if QColor(image.pixel(x, y)).lightness() < 110:
                    painted += 1
    return {"height": height, "shown": shown, "painted": painted}


def _body(out: Path, model: str) -> None:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])

    from app.ui.main_window import MainWindow

    def spin(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    win = MainWindow()
    win.resize(1280, 800)
    win.show()
    spin(300)
    page = win.show_page("Chat")
    spin(100)
    result: dict[str, Any] = {"platform": app.platformName(), "view": [], "page": []}
    view = page.view
    result["line_height"] = view.fontMetrics().lineSpacing()

    # Known replies, streamed a few characters at a time like tokens.
    for name, text in (("one_word", ONE_WORD), ("one_line", ONE_LINE), ("long", LONG)):
        widget = view.begin_stream()
        spin(100)  # laid out before the first token, as when the prompt takes a moment
        pieces = [text[i : i + 5] for i in range(0, len(text), 5)]
        for piece in pieces:
            view.append_token(piece)
            spin(5)
        spin(150)  # past the render throttle
        case = {"name": name, "streaming": _snapshot(widget)}
        view.end_stream(text, "stats")
        spin(100)
        case["ended"] = _snapshot(widget)
        result["view"].append(case)

    # Real replies: the engine on the tiny model, one token, a few, and many.
    page.new_chat()
    page.auto_fit.setChecked(False)
    page.ctx_box.setValue(1024)
    page.gpu_box.setValue(0)
    page.choose_model(model, load=False)
    page.ignore_eos = True
    for tokens in (1, 4, 300):
        page.options.max_tokens.setValue(tokens)
        page.options.seed.setValue(7)
        page.composer.setPlainText(f"Say {tokens} tokens")
        page.send()
        streaming: dict[str, Any] = {}
        for _ in range(1200):  # 60 s at most
            spin(50)
            widget = view.streaming
            if widget is not None and widget.text.strip() and not streaming:
                spin(120)  # let the throttled render show what arrived
                if view.streaming is widget:
                    streaming = _snapshot(widget)
            if not page.busy and view.streaming is None:
                break
        spin(150)
        last = view.messages[-1]
        ended = _snapshot(last)
        result["page"].append(
            {
                "tokens": tokens,
                "role": last.role,
                "text": last.text,
                # a one-token reply may end before a render: then what it shows at the end counts
                "streaming": streaming or ended,
                "ended": ended,
            }
        )
    win.grab().save(str(out.with_suffix(".png")))
    page.shutdown()
    win.close()
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    _body(Path(sys.argv[1]), sys.argv[2])

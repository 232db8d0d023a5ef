"""GUI responsiveness: launch time, and streaming 4000 tokens into the Chat page without stalls.

1. Launch: a fresh interpreter imports QuantDesk's GUI, builds the main window and shows it; the
   time to the window being exposed is compared with a bare PySide6 QMainWindow in the same run
   (median of ``--launches`` alternating runs).
2. Streaming: the Chat page answers one message with ``--tokens`` tokens.  By default the tokens
   are *synthetic* (markdown-like text: paragraphs, lists, code blocks) produced by a generator in
   place of ``Engine.chat`` at ``--rate`` tokens/s, so they travel the real path: a bridge Task on
   a worker thread -> queued signal -> ChatPage._on_task_item -> ChatView (throttled markdown).
   ``--real`` streams from the real engine with the tiny generated model instead.
   Measured on the GUI thread: the longest event-loop stall (a 5 ms heartbeat timer's longest
   late firing, wall clock; goal <= 50 ms) and the GUI thread's CPU time per token (token handler
   plus the renders it triggered) over the last 500 tokens against the first 500 (goal <= 1.5x).  For contrast, the
   same text is also rendered the naive way (whole message re-rendered per token) at both ends.

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m bench.gui_responsiveness [--tokens 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

LAUNCH_APP = """
import time; t0 = time.perf_counter()
from app.ui.app import make_application
from app.ui.main_window import MainWindow
qapp = make_application([])
w = MainWindow(); w.show()
while not (w.windowHandle() and w.windowHandle().isExposed()):
    qapp.processEvents()
qapp.processEvents()
print(time.perf_counter() - t0); w.close()
"""
LAUNCH_BARE = """
import time; t0 = time.perf_counter()
from PySide6.QtWidgets import QApplication, QMainWindow
qapp = QApplication([])
w = QMainWindow(); w.resize(1280, 800); w.show()
while not (w.windowHandle() and w.windowHandle().isExposed()):
    qapp.processEvents()
qapp.processEvents()
print(time.perf_counter() - t0); w.close()
"""


def launch_times(rounds: int) -> dict[str, float]:
    """Median seconds from interpreter start to window shown, and in-process (after imports)."""
    env = dict(os.environ, QUANTDESK_HOME=tempfile.mkdtemp(prefix="qd-bench-"))
    walls: dict[str, list[float]] = {"app": [], "bare": []}
    inner: dict[str, list[float]] = {"app": [], "bare": []}
    for _ in range(rounds):
        for name, code in (("app", LAUNCH_APP), ("bare", LAUNCH_BARE)):
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
            )
            walls[name].append(time.perf_counter() - t0)
            inner[name].append(float(out.stdout.strip().splitlines()[-1]))
    return {
        "app_wall_s": statistics.median(walls["app"]),
        "bare_wall_s": statistics.median(walls["bare"]),
        "app_in_process_s": statistics.median(inner["app"]),
        "bare_in_process_s": statistics.median(inner["bare"]),
    }


def synthetic_tokens(n: int) -> list[str]:
    """Markdown a model could write, cut into ~4-character pieces like real tokens."""
    block = (
        "Here is how the **memory plan** works, step by step.\n\n"
        "1. The weights come from the header, tensor by tensor.\n"
        "2. The KV cache grows with the context: `cells x row size`.\n"
        "3. Compute buffers come from a dry run.\n\n"
        "```python\ndef kv_bytes(n_ctx: int, row: int) -> int:\n    cells = -(-n_ctx // 256) * 256\n"
        "    return cells * row\n```\n\n"
        "> A plan that fits leaves a margin for the system.\n\n"
        "| part | size |\n|---|---|\n| weights | 4.1 GB |\n| KV | 512 MB |\n\n"
    )
    text = ""
    while len(text) < n * 4:
        text += block
    return [text[i : i + 4] for i in range(0, n * 4, 4)]


def naive_cost(pieces: list[str], at: int, samples: int = 40) -> float:
    """Seconds per token when the whole growing message is re-rendered (markdown + setHtml)."""
    from PySide6.QtWidgets import QTextBrowser

    from app.ui.markdown import render

    browser = QTextBrowser()
    browser.resize(800, 600)
    text = "".join(pieces[:at])
    t0 = time.perf_counter()
    for piece in pieces[at : at + samples]:
        text += piece
        browser.setHtml(render(text))
    return (time.perf_counter() - t0) / samples


def stream(tokens: int, rate: float, real: bool) -> dict[str, object]:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.core.engine.protocol import GenerationStats, LoadedInfo
    from app.ui.app import make_application
    from app.ui.main_window import MainWindow
    from app.ui.pages.chat.view import ChatView

    qapp = make_application([])
    window = MainWindow()
    window.show()
    page = window.show_page("Chat")
    page.auto_fit.setChecked(False)
    pieces = synthetic_tokens(tokens)
    if real:
        from tests import modelfactory

        page.ctx_box.setValue(tokens + 256)
        page.choose_model(modelfactory.model_path("Q4_0", modelfactory.TINY), load=False)
        page.ignore_eos = True
    else:
        model = Path(tempfile.mkdtemp()) / "synthetic.gguf"
        page.choose_model(model, load=False)
        page.loaded = LoadedInfo(str(model), tokens + 256, 0, 0, 0.0, None, {}, {}, 0)

        def fake_chat(messages, max_tokens, sampling, ignore_eos=False):  # noqa: ANN001
            step = 1.0 / rate
            start = time.perf_counter()
            for i, piece in enumerate(pieces):
                delay = start + i * step - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                yield piece
            text = "".join(pieces)
            yield GenerationStats(text, len(pieces), 10, 0.01, 0.0, rate, 0.0, "length", 0)

        page.engine.chat = fake_chat  # type: ignore[method-assign]
        page._watchdog.stop()  # no engine process behind the synthetic feed
        page._check_engine = lambda: None  # type: ignore[method-assign]

    # GUI-thread time per token: the page's token handler, plus each render at its token index.
    handled: list[float] = [0.0] * (tokens + 8)
    count = [0]
    on_item = page._on_task_item

    # CPU time of the GUI thread, not wall time: on a shared 2-core machine the engine child and
    # other processes would otherwise show up as "cost" of the view.
    def timed_item(item: object) -> None:
        t0 = time.thread_time()
        on_item(item)
        if isinstance(item, str):
            handled[min(count[0], len(handled) - 1)] += time.thread_time() - t0
            count[0] += 1

    page._task.item_produced.disconnect(page._on_task_item)
    page._task.item_produced.connect(timed_item)
    render_now = ChatView._render_now

    def timed_render(view: ChatView) -> None:
        t0 = time.thread_time()
        render_now(view)
        handled[min(max(count[0] - 1, 0), len(handled) - 1)] += time.thread_time() - t0

    ChatView._render_now = timed_render  # type: ignore[method-assign]

    # Heartbeat: a 5 ms timer; its longest late firing is the longest stall of the event loop.
    beats: list[float] = []
    heart = QTimer()
    heart.setInterval(5)
    heart.timeout.connect(lambda: beats.append(time.perf_counter()))
    page.options.max_tokens.setValue(tokens)
    page.composer.setPlainText("Explain the memory plan.")
    heart.start()
    t0 = time.perf_counter()
    page.send()
    while page.busy or page.view.streaming is not None:
        qapp.processEvents()
        time.sleep(0.001)
    elapsed = time.perf_counter() - t0
    heart.stop()
    ChatView._render_now = render_now  # type: ignore[method-assign]
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    worst = max(range(len(gaps)), key=gaps.__getitem__) if gaps else 0
    n = count[0]
    first = sum(handled[:500]) / 500
    last = sum(handled[n - 500 : n]) / 500
    reply = page.view.messages[-1]
    result = {
        "feed": "real engine, tiny model" if real else f"synthetic, {rate:.0f} tok/s",
        "tokens_received": n,
        "stream_s": round(elapsed, 2),
        "renders": reply.render_count,
        "longest_stall_ms": round(max(gaps) * 1000 - 5, 1) if gaps else None,
        "longest_stall_at_s": round(beats[worst] - t0, 2) if gaps else None,
        "p99_gap_ms": round(sorted(gaps)[int(len(gaps) * 0.99)] * 1000, 1) if gaps else None,
        "first500_us_per_token": round(first * 1e6, 1),
        "last500_us_per_token": round(last * 1e6, 1),
        "last_vs_first": round(last / first, 2) if first else None,
        "us_per_token_by_500": [
            round(sum(handled[i : i + 500]) / 500 * 1e6) for i in range(0, n - 499, 500)
        ],
    }
    if not real:
        result["naive_first500_us_per_token"] = round(naive_cost(pieces, 0) * 1e6, 1)
        result["naive_last500_us_per_token"] = round(naive_cost(pieces, n - 40) * 1e6, 1)
        result["naive_last_vs_first"] = round(
            result["naive_last500_us_per_token"] / result["naive_first500_us_per_token"], 1
        )
    window.close()
    QApplication.processEvents()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--rate", type=float, default=500.0, help="synthetic tokens per second")
    parser.add_argument("--launches", type=int, default=3)
    parser.add_argument("--real", action="store_true", help="stream from the real engine")
    parser.add_argument("--skip-launch", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("QUANTDESK_HOME", tempfile.mkdtemp(prefix="qd-bench-"))
    out: dict[str, object] = {}
    if not args.skip_launch:
        launch = launch_times(args.launches)
        launch["app_vs_bare_window"] = round(launch["app_wall_s"] / launch["bare_wall_s"], 2)
        out["launch"] = {k: round(v, 3) for k, v in launch.items()}
    out["stream"] = stream(args.tokens, args.rate, args.real)
    s = out["stream"]
    print(json.dumps(out, indent=2))
    print(
        f"\nlongest stall {s['longest_stall_ms']} ms (goal <= 50); per-token cost last/first 500 "
        f"{s['last_vs_first']}x (goal <= 1.5)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()

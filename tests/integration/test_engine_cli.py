"""``quantdesk chat`` against real engine failures: JSON always, and a reload after a crash."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import psutil

from tests import modelfactory

BASE = ["--max-tokens", "4", "--preset", "greedy", "--ctx", "256", "--threads", "1"]


def _chat(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "app", "chat", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_json_reports_the_chat_format(tiny_models):
    out = _chat(str(tiny_models["Q8_0"]), "--prompt", "hello", "--json", *BASE)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["chat_format"] == "gguf"
    out = _chat(
        str(tiny_models["Q8_0"]),
        "--prompt",
        "hello",
        "--json",
        "--chat-format",
        "completion",
        *BASE,
    )
    result = json.loads(out.stdout)
    assert result["chat_format"] == "completion" and result["tokens"] == 4


def test_json_is_printed_when_the_load_fails(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_text("hello")
    out = _chat(str(bad), "--prompt", "hi", "--json", *BASE)
    assert out.returncode == 1
    error = json.loads(out.stdout)["error"]
    assert error["kind"] == "invalid_file" and "not a GGUF file" in error["message"]


def test_json_is_printed_when_the_reply_fails():
    shape = replace(modelfactory.TINY, chat_template="{{ 'a' * 300000000 }}")
    out = _chat(str(modelfactory.model_path("F16", shape)), "--prompt", "hi", "--json", *BASE)
    assert out.returncode == 1
    error = json.loads(out.stdout)["error"]
    assert error["kind"] == "template" and "300,000,000" in error["message"]


def _lines(stream, q: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):
        q.put(line)


def _wait_for(q: queue.Queue[str], text: str, seen: list[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} never appeared; stderr was:\n{''.join(seen)}")


def test_interactive_chat_reloads_the_model_after_the_engine_dies(tiny_models):
    cmd = [sys.executable, "-m", "app", "chat", str(tiny_models["Q4_K_M"]), *BASE]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    err: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stderr, err), daemon=True).start()
    threading.Thread(target=_lines, args=(proc.stdout, queue.Queue()), daemon=True).start()
    seen: list[str] = []
    try:
        assert proc.stdin is not None
        proc.stdin.write("hello\n")
        proc.stdin.flush()
        _wait_for(err, "tokens,", seen)
        engines = psutil.Process(proc.pid).children()
        assert len(engines) >= 1
        for child in engines:
            if "resource_tracker" not in " ".join(child.cmdline()):
                child.send_signal(signal.SIGKILL)  # a real death, as the OS's OOM killer does
        proc.stdin.write("are you there?\n")
        proc.stdin.flush()
        _wait_for(err, "reloading the model", seen)
        _wait_for(err, "model reloaded", seen)
        proc.stdin.write("and now?\n")
        proc.stdin.flush()
        _wait_for(err, "tokens,", seen)  # the reloaded model answers
        assert not any("no model is loaded" in line for line in seen)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_without_ctx_and_layers_the_chat_follows_the_memory_plan():
    short = replace(modelfactory.TINY, n_ctx_train=1024)
    path = modelfactory.model_path("Q8_0", short)
    out = _chat(str(path), "--prompt", "hello", "--json", "--max-tokens", "3", "--threads", "1")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    # the default 4096 is more than the model was trained for: the plan takes the trained 1024
    assert result["n_ctx"] == 1024 and result["n_gpu_layers"] == 0, result
    out = _chat(str(path), "--prompt", "hi", "--max-tokens", "2", "--threads", "1")
    assert out.returncode == 0 and "plan: context 1024" in out.stderr, out.stderr

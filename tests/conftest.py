"""Shared fixtures: an isolated QUANTDESK_HOME per test, generated models, and a leak check."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from tests import modelfactory

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")


@pytest.fixture(autouse=True)
def quantdesk_home(tmp_path, monkeypatch):
    """Every test gets its own user-data folder; nothing touches the real one."""
    home = tmp_path / "qd-home"
    monkeypatch.setenv("QUANTDESK_HOME", str(home))
    return home


def _counts(proc: psutil.Process) -> bool:
    """A live child that is ours to clean up (multiprocessing's resource tracker lives on)."""
    try:
        if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return "resource_tracker" not in " ".join(proc.cmdline())
    except psutil.Error:
        return False


@pytest.fixture(autouse=True)
def no_leaked_processes():
    """Fail a test that leaves a child process (engine, server, worker) running."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    deadline = time.monotonic() + 10
    while True:
        left = [
            p
            for p in psutil.Process().children(recursive=True)
            if p.pid not in before and _counts(p)
        ]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for p in left:
        p.kill()
    assert not left, f"test leaked processes: {[p.cmdline()[:3] for p in left]}"


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, os.PathLike]:
    """The tiny generated model at every quant level (generated once, cached on disk)."""
    return modelfactory.all_quants(modelfactory.TINY)


@pytest.fixture(scope="session")
def tiny_f16():
    return modelfactory.model_path("F16", modelfactory.TINY)


# The Hub imitation's fixtures (hub, hub_repos), shared by every engineer's tests.
from tests.hub_fixtures import hub, hub_repos  # noqa: E402, F401

"""The Hardware page with this machine's real profile, a GPU warning given as data, and refresh."""

from __future__ import annotations

import dataclasses

import psutil

from app.core.hardware import GpuInfo, build_warnings, detect
from app.ui.pages.hardware import split_fix
from app.ui.widgets.cards import PlainLabel


def _texts(widget) -> list[str]:
    return [label.text() for label in widget.findChildren(PlainLabel)]


def test_page_shows_this_machine(window, qtbot):
    page = window.show_page("Hardware")
    qtbot.waitUntil(lambda: page.profile is not None, timeout=30_000)
    texts = "\n".join(_texts(page))
    profile = page.profile
    assert profile.cpu.name in texts
    assert f"{profile.cpu.logical_cores} threads" in texts
    total = psutil.virtual_memory().total
    assert profile.ram_total_bytes == total
    assert "RAM" in texts and "available now" in texts
    if not profile.gpus:  # this VM: no GPU
        assert "No GPU found" in texts
    assert "llama-cpp-python 0.3.36" in texts
    assert "CPU" in texts and "This build runs models on" in texts
    assert page.status.text().startswith("Detected at")


def test_gpu_with_cpu_only_build_shows_the_fix(window, qtbot):
    gpus = [GpuInfo("NVIDIA GeForce RTX 3060", "cuda", 12 << 30, 11 << 30, "550.54")]
    profile = dataclasses.replace(
        detect(), gpus=gpus, llama_backends=["cpu"], warnings=build_warnings(gpus, ["cpu"])
    )
    page = window.show_page("Hardware")
    window.context.planner.set_profile(profile)
    page.refresh(redetect=False)
    qtbot.waitUntil(lambda: page.profile is profile, timeout=30_000)
    assert len(page.banners) == 1
    banner = page.banners[0]
    assert "RTX 3060" in banner.headline.text() and "CPU only" in banner.headline.text()
    assert banner.command.text().startswith('CMAKE_ARGS="-DGGML_CUDA=on" pip install')
    texts = "\n".join(_texts(page))
    assert "this llama.cpp build cannot use it" in texts and "driver 550.54" in texts


def test_split_fix_keeps_plain_warnings_whole():
    assert split_fix("something odd") == ("something odd", "")
    head, cmd = split_fix("GPU found; To use the GPU, reinstall: pip install x")
    assert head.endswith("reinstall:") and cmd == "pip install x"


def test_refresh_runs_off_the_gui_thread_and_replaces_the_shared_profile(window, qtbot):
    page = window.show_page("Hardware")
    qtbot.waitUntil(lambda: page.profile is not None, timeout=30_000)
    first = page.profile
    page.refresh()
    # The click returns before detection finished: the page says so and the button waits.
    assert page.status.text() == "Detecting…" and not page.refresh_button.isEnabled()
    qtbot.waitUntil(lambda: page.profile is not first, timeout=30_000)
    assert page.refresh_button.isEnabled()
    assert window.context.hardware() is page.profile


def test_refresh_replans_the_models_page(window, qtbot, hub):
    from tests.hub_fixtures import TINY_REPO

    models = window.show_page("Models")
    models.open_repo(TINY_REPO)
    qtbot.waitUntil(lambda: models.advice is not None, timeout=120_000)
    page = window.show_page("Hardware")
    qtbot.waitUntil(lambda: page.profile is not None, timeout=30_000)
    with qtbot.waitSignal(window.context.events.hardware_changed, timeout=30_000):
        page.refresh()
    assert models.plan_task.busy or models.advice is None  # planning again with the new figures
    qtbot.waitUntil(lambda: models.advice is not None, timeout=120_000)

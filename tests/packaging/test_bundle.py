"""Build the Linux bundle with PyInstaller and run it: ``--version``, ``--self-test``, the window.

The build bundles this environment's packages (``packaging/build.py --current-env``), so it takes
a minute or two rather than compiling llama.cpp again.  Slow, but CI runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="CI builds and runs the Linux bundle"),
]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle() -> Iterator[Path]:
    """The built one-folder bundle (deleted after this module's tests)."""
    with tempfile.TemporaryDirectory(prefix="quantdesk-bundle-") as tmp:
        dist, work = Path(tmp) / "dist", Path(tmp) / "work"
        cmd = [sys.executable, str(ROOT / "packaging" / "build.py"), "--current-env", "--no-check"]
        cmd += ["--dist", str(dist), "--work", str(work)]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
        folder = dist / "QuantDesk"
        size = sum(
            p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
        )
        print(f"\nLinux bundle: {size / 2**20:.0f} MiB, built in {time.perf_counter() - t0:.0f} s")
        yield folder


def run_bundle(folder: Path, home: Path, *args: str, timeout: float = 120, **env: str):
    environ = {**os.environ, "QUANTDESK_HOME": str(home), "QT_QPA_PLATFORM": "offscreen", **env}
    # The bundle must not lean on this checkout or its venv.
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        environ.pop(name, None)
    cwd = folder.parent  # not the repository: nothing there may leak into the bundle's imports
    return subprocess.run(
        [str(folder / "QuantDesk"), *args],
        env=environ,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bundle_holds_llama_cpp_qt_plugins_resources_and_no_tests(bundle):
    internal = bundle / "_internal"
    lib = internal / "llama_cpp" / "lib"
    for name in ("libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so"):
        assert (lib / name).exists(), name
    plugins = internal / "PySide6" / "Qt" / "plugins"
    for plugin in ("platforms/libqxcb.so", "platforms/libqoffscreen.so", "imageformats/libqsvg.so"):
        assert (plugins / plugin).exists(), plugin
    assert (internal / "resources" / "icons" / "quantdesk.svg").exists()
    assert (bundle / "install.sh").exists() and (bundle / "quantdesk.desktop.in").exists()
    assert not (internal / "tests").exists()
    dangling = [p for p in bundle.rglob("*") if p.is_symlink() and not p.exists()]
    assert not dangling


def test_version(bundle, tmp_path):
    out = run_bundle(bundle, tmp_path / "home", "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"QuantDesk {app.__version__}"


def test_bundle_reports_its_llama_cpp_backend(bundle, tmp_path):
    # What the Hardware page shows: the backends of the llama.cpp inside the bundle.
    out = run_bundle(bundle, tmp_path / "home", "hw", "--json")
    assert out.returncode == 0, out.stderr
    assert "cpu" in json.loads(out.stdout)["llama_backends"]


def test_self_test_runs_a_model_in_the_bundled_engine(bundle, tmp_path):
    out = run_bundle(bundle, tmp_path / "home", "--self-test")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "OK" and any("generated 8 tokens" in line for line in lines)
    assert not (tmp_path / "home").exists()


def test_gui_starts_offscreen_and_closes_cleanly(bundle, tmp_path):
    t0 = time.perf_counter()
    out = run_bundle(bundle, tmp_path / "home", timeout=90, QUANTDESK_QUIT_AFTER_MS="3000")
    elapsed = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert elapsed >= 3  # the window really stayed up until the timer closed it


@pytest.mark.skipif(not shutil.which("xvfb-run"), reason="xvfb-run is not installed")
def test_gui_starts_on_a_real_x_server(bundle, tmp_path):
    # The xcb platform plugin with the X libraries it was bundled with (or the system's).
    cmd = ["xvfb-run", "-a", str(bundle / "QuantDesk")]
    env = {**os.environ, "QUANTDESK_HOME": str(tmp_path / "home"), "QT_QPA_PLATFORM": "xcb"}
    env["QUANTDESK_QUIT_AFTER_MS"] = "2000"
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-3000:]


def test_bundle_carries_the_x_libraries_the_xcb_plugin_needs(bundle):
    # A bare Debian/Ubuntu lacks libxcb-cursor0, libxcb-icccm4, libxcb-keysyms1 and friends: the
    # bundle must bring its own copies, which the loader finds there before the system's.
    internal = bundle / "_internal"
    plugin = internal / "PySide6" / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    env = {**os.environ, "LD_LIBRARY_PATH": str(internal)}
    out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and "not found" not in out.stdout, out.stdout
    resolved = {
        line.split("=>")[0].strip(): line.split("=>")[1].split("(")[0].strip()
        for line in out.stdout.splitlines()
        if "=>" in line
    }
    for soname in ("libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1",
                   "libxcb-image.so.0", "libxcb-render-util.so.0", "libxkbcommon-x11.so.0"):  # fmt: skip
        assert Path(resolved[soname]).resolve().is_relative_to(internal.resolve()), (
            soname,
            resolved,
        )

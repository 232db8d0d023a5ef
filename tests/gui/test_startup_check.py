"""The Linux start-up check: missing X libraries are named with the command that installs them,
instead of Qt's xcb plugin aborting the process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.ui import app as ui_app

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the check is for Linux desktops")


def _plugin_needing(tmp_path: Path, soname: str) -> Path:
    """A real shared object whose DT_NEEDED names ``soname``, a library that then disappears."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build a test plugin")
    stub_dir = tmp_path / "gone"
    stub_dir.mkdir()
    (tmp_path / "stub.c").write_text("int stub(void) { return 1; }\n")
    (tmp_path / "plugin.c").write_text("int stub(void);\nint plugin(void) { return stub(); }\n")
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(stub_dir / soname), f"-Wl,-soname,{soname}",
         str(tmp_path / "stub.c")],
        check=True, timeout=60,
    )  # fmt: skip
    plugin = tmp_path / "libqxcb.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(plugin), str(tmp_path / "plugin.c"),
         f"-L{stub_dir}", f"-l:{soname}"],
        check=True, timeout=60,
    )  # fmt: skip
    shutil.rmtree(stub_dir)
    return plugin


def test_a_missing_library_is_named_with_the_apt_command(tmp_path):
    plugin = _plugin_needing(tmp_path, "libxcb-quantdesk-test.so.0")
    assert ui_app.missing_libraries(plugin) == ["libxcb-quantdesk-test.so.0"]
    message = ui_app.xcb_problem([], {"QT_QPA_PLATFORM": "xcb"}, plugin=plugin)
    assert message is not None
    assert "libxcb-quantdesk-test.so.0" in message
    assert "apt install libxcb-quantdesk-test0" in message or "dnf install libxcb" in message


def test_install_command_follows_the_distribution(tmp_path):
    missing = ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libX11-xcb.so.1"]
    debian = tmp_path / "debian"
    debian.write_text('ID=ubuntu\nID_LIKE="debian"\n')
    assert ui_app.install_command(missing, debian) == (
        "sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libx11-xcb1"
    )
    fedora = tmp_path / "fedora"
    fedora.write_text("ID=fedora\n")
    assert ui_app.install_command(missing, fedora) == (
        "sudo dnf install xcb-util-cursor xcb-util-wm xcb-util-keysyms libX11-xcb"
    )
    unknown = ui_app.install_command(missing, tmp_path / "absent")
    assert "apt install" in unknown and "dnf install" in unknown


def test_no_check_for_offscreen_or_wayland(tmp_path):
    plugin = _plugin_needing(tmp_path, "libxcb-quantdesk-test.so.0")
    for environ in ({"QT_QPA_PLATFORM": "offscreen"}, {"QT_QPA_PLATFORM": "wayland"},
                    {"WAYLAND_DISPLAY": "wayland-0"}):  # fmt: skip
        assert ui_app.xcb_problem([], environ, plugin=plugin) is None, environ
    assert ui_app.xcb_problem(["-platform", "offscreen"], {}, plugin=plugin) is None
    assert ui_app.xcb_problem(["-platform", "xcb"], {}, plugin=plugin) is not None


def test_ldd_and_ctypes_agree_on_this_machines_xcb_plugin():
    plugin = ui_app.xcb_plugin_path()
    assert plugin is not None and plugin.name == "libqxcb.so"
    assert ui_app.missing_libraries(plugin) == sorted(ui_app._missing_by_ctypes())


def test_the_window_does_not_start_and_says_why(tmp_path):
    # run_gui on X11 with a library missing: exit 1 with the command, not Qt's abort (rc 134).
    # Only the plugin's location is pointed at the test plugin; the check itself runs as shipped.
    plugin = _plugin_needing(tmp_path, "libxcb-quantdesk-test.so.0")
    code = (
        "import sys, os\nfrom pathlib import Path\nfrom app.ui import app as a\n"
        f"a.xcb_plugin_path = lambda: Path({str(plugin)!r})\n"
        "sys.exit(a.run_gui([]))\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "QUANTDESK_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1, out.stderr
    assert "cannot open its window" in out.stderr and "install" in out.stderr
    assert "PySide6.QtWidgets" not in out.stderr

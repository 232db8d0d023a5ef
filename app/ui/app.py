"""Create the QApplication and show the main window."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import app

if TYPE_CHECKING:  # Qt is imported lazily: the CLI path must not pay for it
    from PySide6.QtWidgets import QApplication


def make_application(argv: list[str]) -> QApplication:
    """The one QApplication, with QuantDesk's names, icon and stylesheet."""
    from PySide6.QtWidgets import QApplication

    from app.ui.widgets.icon import app_icon
    from app.ui.widgets.style import apply_style

    qapp = QApplication.instance() or QApplication([sys.argv[0], *argv])
    assert isinstance(qapp, QApplication)
    qapp.setApplicationName(app.APP_NAME)
    qapp.setApplicationDisplayName(app.APP_NAME)
    qapp.setApplicationVersion(app.__version__)
    qapp.setOrganizationName(app.APP_NAME)
    qapp.setDesktopFileName("quantdesk")  # matches the .desktop entry from packaging/
    qapp.setWindowIcon(app_icon())
    apply_style(qapp)
    return qapp


def run_gui(argv: list[str]) -> int:
    problem = xcb_problem(argv, os.environ)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    from app.ui.main_window import MainWindow

    qapp = make_application(argv)
    window = MainWindow()
    window.show()
    quit_after = os.environ.get("QUANTDESK_QUIT_AFTER_MS")  # smoke tests of a built bundle
    if quit_after:
        from PySide6.QtCore import QTimer

        QTimer.singleShot(int(quit_after), window.close)  # closeEvent cleans up, as for a user
    return qapp.exec()


# --- Start-up check: Qt's xcb plugin aborts the process (SIGABRT) when a library it links is
# missing, with a message few people understand.  Find those libraries first and say what to install.

# Debian/Ubuntu name most libraries after their soname ("libxcb-icccm.so.4" -> "libxcb-icccm4"); the
# exceptions are listed.  Fedora groups the xcb-util libraries into a few packages.
_APT_EXCEPTIONS = {"libglib-2.0.so.0": "libglib2.0-0", "libgthread-2.0.so.0": "libglib2.0-0"}
_DNF_PACKAGES = {
    "libxcb-cursor.so.0": "xcb-util-cursor",
    "libxcb-icccm.so.4": "xcb-util-wm",
    "libxcb-keysyms.so.1": "xcb-util-keysyms",
    "libxcb-image.so.0": "xcb-util-image",
    "libxcb-render-util.so.0": "xcb-util-renderutil",
    "libxcb-util.so.1": "xcb-util",
    "libX11-xcb.so.1": "libX11-xcb",
    "libX11.so.6": "libX11",
    "libxkbcommon.so.0": "libxkbcommon",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11",
    "libGL.so.1": "libglvnd-glx",
    "libEGL.so.1": "libglvnd-egl",
    "libfontconfig.so.1": "fontconfig",
    "libfreetype.so.6": "freetype",
    "libdbus-1.so.3": "dbus-libs",
    "libglib-2.0.so.0": "glib2",
    "libgthread-2.0.so.0": "glib2",
}
# What the xcb plugin of PySide6 6.x links (ldd of libqxcb.so and libQt6XcbQpa.so.6): checked
# with ctypes when ldd is not there.
XCB_LIBRARIES = (
    "libxcb.so.1",
    "libX11-xcb.so.1",
    "libxcb-cursor.so.0",
    "libxcb-icccm.so.4",
    "libxcb-keysyms.so.1",
    "libxcb-image.so.0",
    "libxcb-render-util.so.0",
    "libxcb-util.so.1",
    "libxcb-randr.so.0",
    "libxcb-shape.so.0",
    "libxcb-shm.so.0",
    "libxcb-sync.so.1",
    "libxcb-xfixes.so.0",
    "libxcb-render.so.0",
    "libxcb-xkb.so.1",
    "libxkbcommon.so.0",
    "libxkbcommon-x11.so.0",
)


def apt_package(soname: str) -> str:
    """The Debian/Ubuntu package that ships ``soname`` (``libxcb-icccm.so.4`` -> ``libxcb-icccm4``)."""
    if soname in _APT_EXCEPTIONS:
        return _APT_EXCEPTIONS[soname]
    stem, _, version = soname.partition(".so.")
    stem = stem.lower()
    version = version.split(".")[0]
    return f"{stem}-{version}" if stem[-1:].isdigit() else f"{stem}{version}"


def dnf_package(soname: str) -> str:
    """The Fedora/RHEL package that ships ``soname`` (the xcb core libraries are all in ``libxcb``)."""
    return _DNF_PACKAGES.get(soname, "libxcb" if soname.startswith("libxcb") else soname)


def xcb_plugin_path() -> Path | None:
    """Qt's xcb platform plugin, in the bundle or in the installed PySide6 (None if not found)."""
    import importlib.util

    roots = []
    if getattr(sys, "frozen", False):
        roots.append(Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)) / "PySide6")
    spec = importlib.util.find_spec("PySide6")
    if spec is not None and spec.origin:
        roots.append(Path(spec.origin).parent)
    for root in roots:
        for candidate in (root / "Qt" / "plugins", root / "plugins"):
            plugin = candidate / "platforms" / "libqxcb.so"
            if plugin.exists():
                return plugin
    return None


def missing_libraries(plugin: Path, timeout_s: float = 20.0) -> list[str]:
    """Sonames the dynamic loader cannot find for ``plugin`` (``ldd``; ctypes when ldd is absent)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return _missing_by_ctypes()
    env = dict(os.environ)
    if getattr(sys, "frozen", False):  # the bundle's own copies come first, as when Qt loads them
        internal = str(getattr(sys, "_MEIPASS", Path(sys.executable).parent))
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [internal, env.get("LD_LIBRARY_PATH")])
        )
    try:
        out = subprocess.run(
            [ldd, str(plugin)], capture_output=True, text=True, timeout=timeout_s, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return _missing_by_ctypes()
    missing = []
    for line in out.stdout.splitlines():
        name, sep, where = line.strip().partition("=>")
        if sep and where.strip().startswith("not found"):
            missing.append(name.strip())
    return sorted(dict.fromkeys(missing))


def _missing_by_ctypes() -> list[str]:
    import ctypes

    missing = []
    for name in XCB_LIBRARIES:
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.append(name)
    return missing


def install_command(missing: list[str], os_release: Path = Path("/etc/os-release")) -> str:
    """The one command that installs ``missing``: apt on Debian-likes, dnf on Fedora-likes."""
    ids = ""
    with contextlib.suppress(OSError):
        for line in os_release.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            if key in ("ID", "ID_LIKE"):
                ids += " " + value.strip().strip('"').lower()
    apt = "sudo apt install " + " ".join(dict.fromkeys(apt_package(n) for n in missing))
    dnf = "sudo dnf install " + " ".join(dict.fromkeys(dnf_package(n) for n in missing))
    if any(w in ids.split() for w in ("debian", "ubuntu")):
        return apt
    if any(w in ids.split() for w in ("fedora", "rhel", "centos")):
        return dnf
    return f"{apt}\n   or: {dnf}"


def uses_xcb(argv: list[str], environ: Mapping[str, str]) -> bool:
    """Whether Qt will pick its xcb plugin: Linux, no other platform asked for, not a Wayland session."""
    if not sys.platform.startswith("linux"):
        return False
    platform = environ.get("QT_QPA_PLATFORM", "")
    if "-platform" in argv[:-1]:
        platform = argv[argv.index("-platform") + 1]
    if platform:
        return platform.split(":")[0].split(";")[0] == "xcb"
    wayland = environ.get("WAYLAND_DISPLAY") or environ.get("XDG_SESSION_TYPE") == "wayland"
    return not wayland


def xcb_problem(
    argv: list[str], environ: Mapping[str, str], plugin: Path | None = None
) -> str | None:
    """What to tell the user when the window cannot open for missing X libraries (None: all there)."""
    if not uses_xcb(argv, environ):
        return None
    plugin = plugin or xcb_plugin_path()
    if plugin is None:
        return None
    missing = missing_libraries(plugin)
    if not missing:
        return None
    return (
        f"{app.APP_NAME} cannot open its window: Qt's X11 support needs libraries that are not "
        f"installed ({', '.join(missing)}).\nInstall them with:\n\n   {install_command(missing)}\n"
    )

"""Fast checks of the packaging pieces: build flags, icons, the Linux menu entry, ``--self-test``."""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import app
import bootstrap
from app import selftest

ROOT = Path(__file__).resolve().parents[2]
ICONS = ROOT / "resources" / "icons"
LINUX = ROOT / "packaging" / "linux"


def load_script(name: str) -> ModuleType:
    """A script from packaging/ (a plain folder: an importable one would shadow PyPI's packaging)."""
    spec = importlib.util.spec_from_file_location(
        f"qd_packaging_{name}", ROOT / "packaging" / f"{name}.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = load_script("build")
make_icons = load_script("make_icons")


# ---- build flags ------------------------------------------------------------------------------
def test_x86_builds_use_bootstraps_portable_flags():
    for backend in ("cpu", "cuda"):
        args = build.cmake_args(backend, system="Linux", machine="x86_64")
        assert args.startswith(bootstrap._X86_CMAKE_ARGS)
        assert "GGML_NATIVE=OFF" in args and "AMX" not in args
    assert "-DGGML_CUDA=ON" in build.cmake_args("cuda", system="Windows", machine="AMD64")
    assert "CUDA" not in build.cmake_args("cpu", system="Linux", machine="x86_64")


def test_metal_is_the_apple_silicon_default_and_only_on_macos():
    assert build.default_backend(system="Darwin", machine="arm64") == "metal"
    assert build.default_backend(system="Darwin", machine="x86_64") == "cpu"
    assert build.default_backend(system="Linux", machine="aarch64") == "cpu"
    metal = build.cmake_args("metal", system="Darwin", machine="arm64")
    assert "-DGGML_METAL=ON" in metal and "GGML_NATIVE=OFF" in metal
    assert "-DGGML_METAL=OFF" in build.cmake_args("cpu", system="Darwin", machine="arm64")


@pytest.mark.parametrize(
    ("backend", "system", "message"),
    [
        ("metal", "Linux", "only on macOS"),
        ("cuda", "Darwin", "CUDA does not run on macOS"),
        ("rocm", "Linux", "unknown backend"),
    ],
)
def test_impossible_backends_are_refused_with_a_reason(backend, system, message):
    with pytest.raises(ValueError, match=message):
        build.cmake_args(backend, system=system, machine="x86_64")


def test_versions_come_from_pyproject():
    assert build.pinned("llama-cpp-python") == "llama-cpp-python==0.3.36"
    assert build.pinned("pyinstaller").startswith("pyinstaller==6.")
    with pytest.raises(SystemExit, match="pins no version"):
        build.pinned("not-a-dependency")


def test_bundling_the_current_env_refuses_a_backend_it_was_not_built_with():
    from app.core.hardware import detect_backends

    if "cuda" in detect_backends([]):
        pytest.skip("this llama.cpp has CUDA")
    with pytest.raises(SystemExit, match="has no cuda backend"):
        build.main(["--current-env", "--backend", "cuda"])


# ---- icons ------------------------------------------------------------------------------------
def _read_all(path: Path) -> list[tuple[int, int]]:
    from PySide6.QtGui import QImageReader

    reader = QImageReader(str(path))
    assert reader.canRead(), f"Qt cannot read {path.name}: {reader.errorString()}"
    sizes = []
    count = reader.imageCount()
    for i in range(max(1, count)):
        assert count <= 1 or reader.jumpToImage(i)  # single images cannot "jump"
        image = reader.read()
        assert not image.isNull(), reader.errorString()
        sizes.append((image.width(), image.height()))
    return sizes


def test_icon_files_are_complete_and_readable(qapp):
    from PySide6.QtSvg import QSvgRenderer

    assert QSvgRenderer(str(ICONS / "quantdesk.svg")).isValid()
    for size in make_icons.PNG_SIZES:
        assert _read_all(ICONS / f"quantdesk-{size}.png") == [(size, size)]
    assert sorted(_read_all(ICONS / "quantdesk.ico")) == [(s, s) for s in make_icons.ICO_SIZES]
    icns = sorted(set(_read_all(ICONS / "quantdesk.icns")))
    assert icns == sorted({(s, s) for s in make_icons.ICNS_TYPES.values()})


def test_icon_containers_index_their_pngs():
    pngs = {16: b"\x89PNG-sixteen", 256: b"\x89PNG-big"}
    ico = make_icons.ico_bytes(pngs)
    assert struct.unpack("<HHH", ico[:6]) == (0, 1, 2)
    for i, (size, blob) in enumerate(sorted(pngs.items())):
        w, h, _, _, planes, bpp, length, offset = struct.unpack(
            "<BBBBHHII", ico[6 + 16 * i : 22 + 16 * i]
        )
        assert (w, h) == ((0, 0) if size == 256 else (size, size))  # 0 means 256
        assert (planes, bpp) == (1, 32) and ico[offset : offset + length] == blob
    full = {s: f"png{s}".encode() for s in set(make_icons.ICNS_TYPES.values())}
    icns = make_icons.icns_bytes(full)
    assert icns[:4] == b"icns" and struct.unpack(">I", icns[4:8])[0] == len(icns)
    pos, seen = 8, {}
    while pos < len(icns):
        kind, length = icns[pos : pos + 4], struct.unpack(">I", icns[pos + 4 : pos + 8])[0]
        seen[kind] = icns[pos + 8 : pos + length]
        pos += length
    assert seen == {k: full[s] for k, s in make_icons.ICNS_TYPES.items()}


# ---- Linux menu entry -------------------------------------------------------------------------
def fake_bundle(folder: Path) -> Path:
    """A bundle-shaped folder: a QuantDesk program, install.sh, the template, _internal icons."""
    folder.mkdir(parents=True)
    exe = folder / "QuantDesk"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    for name in ("install.sh", "quantdesk.desktop.in"):
        shutil.copy2(LINUX / name, folder / name)
    shutil.copytree(ICONS, folder / "_internal" / "resources" / "icons")
    return exe


def desktop_exec(entry: str) -> str:
    """The program path in an Exec= line, unescaped as the Desktop Entry spec says."""
    value = next(line for line in entry.splitlines() if line.startswith("Exec="))[5:]
    value = value.replace("%%", "\0")
    value = value.replace("\\\\", "\\")  # string-level escape first
    assert value[0] == value[-1] == '"'
    out, chars = [], iter(value[1:-1])
    for ch in chars:
        out.append(next(chars) if ch == "\\" else ch)
    return "".join(out).replace("\0", "%")


def install(bundle_dir: Path, data: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_DATA_HOME": str(data)}
    script = str(bundle_dir / "install.sh")
    return subprocess.run([script, *args], env=env, capture_output=True, text=True)


@pytest.mark.skipif(sys.platform != "linux", reason="the menu entry is for Linux desktops")
def test_install_script_adds_the_entry_and_icons_and_uninstall_removes_them(tmp_path):
    exe = fake_bundle(tmp_path / 'odd $name "quoted" `x` 100%\\dir' / "QuantDesk")
    data = tmp_path / "xdg-data"
    out = install(exe.parent, data)
    assert out.returncode == 0, out.stderr
    entry = (data / "applications" / "quantdesk.desktop").read_text()
    assert desktop_exec(entry) == str(exe)
    assert "Icon=quantdesk" in entry and "Terminal=false" in entry
    assert (data / "icons/hicolor/scalable/apps/quantdesk.svg").exists()
    for size in make_icons.PNG_SIZES:
        assert (data / f"icons/hicolor/{size}x{size}/apps/quantdesk.png").exists()
    assert install(exe.parent, data, "--uninstall").returncode == 0
    assert not [p for p in data.rglob("quantdesk*") if p.is_file()]


@pytest.mark.skipif(sys.platform != "linux", reason="the menu entry is for Linux desktops")
def test_desktop_entry_validates(tmp_path):
    validator = shutil.which("desktop-file-validate")
    if not validator:
        pytest.skip("desktop-file-validate is not installed (apt-get install desktop-file-utils)")
    exe = fake_bundle(tmp_path / "with space" / "QuantDesk")
    assert install(exe.parent, tmp_path / "data").returncode == 0
    entry = tmp_path / "data" / "applications" / "quantdesk.desktop"
    check = subprocess.run([validator, str(entry)], capture_output=True, text=True)
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="the menu entry is for Linux desktops")
def test_install_script_refuses_a_folder_without_the_program(tmp_path):
    exe = fake_bundle(tmp_path / "QuantDesk")
    exe.unlink()
    out = install(exe.parent, tmp_path / "data")
    assert out.returncode == 1 and "not found" in out.stderr
    assert not (tmp_path / "data").exists()


# ---- --version and --self-test from the source tree ----------------------------------------------
def test_version_and_self_test_from_source(quantdesk_home):
    version = subprocess.run(
        [sys.executable, "-m", "app", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert version.returncode == 0 and version.stdout.strip() == f"QuantDesk {app.__version__}"
    out = subprocess.run(
        [sys.executable, "-m", "app", "--self-test"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "OK" and "generated 8 tokens" in out.stdout
    assert not quantdesk_home.exists()  # the self-test leaves the user's folders alone


def test_self_test_names_modules_that_do_not_import(tmp_path, monkeypatch, capsys):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "broken_page.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.setattr(app, "__path__", [*app.__path__, str(extra)])
    assert selftest.run_self_test() == 1
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "app.broken_page: ModuleNotFoundError" in printed
    assert "OK" not in printed.splitlines()


def test_self_test_fails_cleanly_when_the_engine_cannot_load_the_model(monkeypatch, capsys):
    from app.core import synthetic_model

    def write_garbage(path: Path, shape: object) -> Path:
        path.write_bytes(b"GGUF" + b"\0" * 64)  # a header that ends before its tensors
        return path

    monkeypatch.setattr(synthetic_model, "write_f16_model", write_garbage)
    assert selftest.run_self_test() == 1
    printed = capsys.readouterr().out
    assert "FAILED: the engine could not run the test model" in printed

"""Build the double-clickable QuantDesk app for this OS in one command.

    python3 packaging/build.py                    # CPU build (Metal on Apple Silicon)
    python3 packaging/build.py --backend cuda     # NVIDIA GPUs (needs the CUDA toolkit)
    python3 packaging/build.py --current-env      # bundle the llama.cpp already installed here

Result: ``dist/QuantDesk/`` (Linux, Windows: a folder to copy anywhere; run ``QuantDesk`` inside it)
or ``dist/QuantDesk.app`` (macOS).  On Linux, ``dist/QuantDesk/install.sh`` then adds the app to the
desktop's menu.

Unless ``--current-env`` is given, the build gets its own virtual environment
(``build/venv-<backend>``) with llama-cpp-python compiled for the chosen backend -- the flags below
become its ``CMAKE_ARGS`` -- so the development ``.venv`` is never touched.  The first build compiles
llama.cpp (minutes; CUDA: much longer), later builds reuse the environment.  Finally the bundle's
``--self-test`` loads a generated model in the bundled engine and must print OK.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
BACKENDS = ("cpu", "cuda", "metal")
sys.path.insert(0, str(ROOT))
from bootstrap import _X86_CMAKE_ARGS, RPC_CMAKE_ARGS  # noqa: E402 - one definition of the portable x86 flags


def default_backend(system: str | None = None, machine: str | None = None) -> str:
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    return "metal" if system == "Darwin" and machine in {"arm64", "aarch64"} else "cpu"


def cmake_args(backend: str, system: str | None = None, machine: str | None = None) -> str:
    """llama-cpp-python's CMAKE_ARGS for a backend on this OS and CPU (ValueError if impossible)."""
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "metal" and system != "Darwin":
        raise ValueError("the Metal backend exists only on macOS")
    if backend == "cuda" and system == "Darwin":
        raise ValueError("CUDA does not run on macOS: use --backend metal or cpu")
    # A bundle runs on other people's machines: never tune the CPU code for the build machine.
    flags = [_X86_CMAKE_ARGS] if machine in {"x86_64", "amd64"} else ["-DGGML_NATIVE=OFF"]
    flags.append(RPC_CMAKE_ARGS)
    if backend == "cuda":
        flags.append("-DGGML_CUDA=ON")  # without GGML_NATIVE, for every common GPU architecture
    elif backend == "metal":
        flags.append("-DGGML_METAL=ON -DGGML_METAL_EMBED_LIBRARY=ON")  # shaders inside the dylib
    elif system == "Darwin":
        flags.append("-DGGML_METAL=OFF")
    return " ".join(flags)


def pinned(name: str) -> str:
    """The ``name==version`` requirement as pinned in pyproject.toml (one source of versions)."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(rf'"({re.escape(name)}==[^"]+)"', text)
    if not match:
        raise SystemExit(f"pyproject.toml pins no version of {name}")
    return match.group(1)


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _stamped(stamp: Path, key: str) -> bool:
    return stamp.exists() and stamp.read_text() == hashlib.sha256(key.encode()).hexdigest()


def prepare_venv(backend: str, flags: str) -> Path:
    """build/venv-<backend> with QuantDesk's dependencies, llama.cpp built with ``flags``.

    llama.cpp is compiled again only when its version or the flags change; the other dependencies
    are brought up to date whenever pyproject.toml changes.
    """
    venv = ROOT / "build" / f"venv-{backend}"
    python = _venv_python(venv)
    llama_stamp, deps_stamp = venv / ".quantdesk-llama", venv / ".quantdesk-deps"
    llama_key = pinned("llama-cpp-python") + " " + flags
    deps_key = (ROOT / "pyproject.toml").read_text()
    if not python.exists():
        print(f"Creating {venv} ...", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
    pip = [str(python), "-m", "pip", "install", "--upgrade"]
    env = {**os.environ, "CMAKE_ARGS": flags, "FORCE_CMAKE": "1"}
    if not _stamped(llama_stamp, llama_key):
        subprocess.check_call([*pip, "pip"])
        print(f"Compiling llama.cpp with CMAKE_ARGS={flags!r} (several minutes) ...", flush=True)
        # --no-cache-dir: pip would otherwise reuse a wheel it built earlier with other flags
        cmd = [*pip, "--no-cache-dir", "--force-reinstall", "--no-deps"]
        subprocess.check_call([*cmd, pinned("llama-cpp-python")], env=env)
        llama_stamp.write_text(hashlib.sha256(llama_key.encode()).hexdigest())
        deps_stamp.unlink(missing_ok=True)
    if not _stamped(deps_stamp, deps_key):
        subprocess.check_call([*pip, str(ROOT), pinned("pyinstaller")], env=env)
        deps_stamp.write_text(hashlib.sha256(deps_key.encode()).hexdigest())
    return python


def bundle_executable(dist: Path) -> Path:
    """The program inside the built bundle."""
    if sys.platform == "darwin":
        return dist / "QuantDesk.app" / "Contents" / "MacOS" / "QuantDesk"
    return dist / "QuantDesk" / ("QuantDesk.exe" if os.name == "nt" else "QuantDesk")


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def build(python: Path, dist: Path, work: Path) -> Path:
    """Run PyInstaller on the spec with ``python``; returns the bundle's executable."""
    cmd = [str(python), "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN"]
    cmd += ["--distpath", str(dist), "--workpath", str(work), str(PACKAGING / "quantdesk.spec")]
    subprocess.check_call(cmd, cwd=ROOT)
    if sys.platform.startswith("linux"):
        folder = dist / "QuantDesk"
        for name in ("install.sh", "quantdesk.desktop.in"):
            shutil.copy2(PACKAGING / "linux" / name, folder / name)
    return bundle_executable(dist)


def self_test(exe: Path) -> int:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run([str(exe), "--self-test"], env=env, capture_output=True, text=True)
    print(result.stdout + result.stderr, end="", flush=True)
    if result.returncode == 0 and "OK" in result.stdout.splitlines():
        return 0
    print(f"The bundle's self-test failed (exit code {result.returncode}).", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, default=default_backend())
    parser.add_argument(
        "--current-env",
        action="store_true",
        help="bundle this Python's installed packages as they are (no build venv, no compiling)",
    )
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "pyinstaller")
    parser.add_argument("--no-check", action="store_true", help="skip the bundle's --self-test")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.current_env:
        python = Path(sys.executable)
        if importlib.util.find_spec("PyInstaller") is None:
            raise SystemExit(
                f"PyInstaller is missing: {python} -m pip install {pinned('pyinstaller')}"
            )
        from app.core.hardware import detect_backends

        have = detect_backends([])
        if args.backend not in have:
            raise SystemExit(
                f"the installed llama.cpp has no {args.backend} backend (it has: {', '.join(sorted(have))}); "
                "drop --current-env to build one"
            )
    else:
        try:
            flags = cmake_args(args.backend)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        python = prepare_venv(args.backend, flags)
    exe = build(python, args.dist.resolve(), args.work.resolve())
    bundle = exe.parents[2] if sys.platform == "darwin" else exe.parent
    print(
        f"Built {bundle} ({args.backend}): {folder_size(bundle) / 2**20:.0f} MiB "
        f"in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return 0 if args.no_check else self_test(exe)


if __name__ == "__main__":
    sys.exit(main())

"""Set up QuantDesk in ./.venv and run it, or run its tests.

    python3 bootstrap.py run [ARGS...]   # create .venv, install, start the app (ARGS go to quantdesk)
    python3 bootstrap.py test [ARGS...]  # create .venv, install test extras; ruff, mypy, import
                                         # contracts, then pytest

Works the same on Linux, macOS and Windows with Python 3.10+ and a C/C++ compiler (llama-cpp-python
builds from source the first time; pip caches the wheel afterwards).  Re-installs only when
pyproject.toml changed since the last install.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


# llama.cpp's default build uses -march=native, which on some CPUs and VMs enables AMX (and crashes
# with SIGILL when the hypervisor does not allow it) and makes a binary that older CPUs cannot run.
# On x86_64 we build for the AVX2 baseline instead unless the user chose CMAKE_ARGS (e.g. CUDA).
_X86_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
)
# Every build carries llama.cpp's RPC backend: `quantdesk worker` and split models need it.
RPC_CMAKE_ARGS = "-DGGML_RPC=ON"


def _build_env() -> dict[str, str]:
    env = dict(os.environ)
    if "CMAKE_ARGS" not in env:
        x86 = platform.machine().lower() in {"x86_64", "amd64"}
        env["CMAKE_ARGS"] = f"{_X86_CMAKE_ARGS} {RPC_CMAKE_ARGS}" if x86 else RPC_CMAKE_ARGS
    elif "GGML_RPC" not in env["CMAKE_ARGS"]:
        env["CMAKE_ARGS"] += f" {RPC_CMAKE_ARGS}"
    return env


def _ensure_venv(extras: str) -> None:
    if sys.version_info < (3, 10):  # noqa: UP036 - this file runs on whatever python3 is
        sys.exit("QuantDesk needs Python 3.10 or newer.")
    if not PY.exists():
        print("Creating virtual environment in .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / f".quantdesk-installed-{extras or 'base'}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    print("Installing QuantDesk and its dependencies (first time: several minutes) ...", flush=True)
    target = f".[{extras}]" if extras else "."
    subprocess.check_call([str(PY), "-m", "pip", "install", "--upgrade", "pip"], cwd=ROOT)
    cmd = [str(PY), "-m", "pip", "install", "-e", target]
    if "CMAKE_ARGS" in os.environ:
        # pip's wheel cache ignores CMAKE_ARGS: a cached CPU build would silently win over CUDA/Metal
        cmd.append("--no-cache-dir")
    subprocess.check_call(cmd, cwd=ROOT, env=_build_env())
    stamp.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test"}:
        print(__doc__)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "run":
        _ensure_venv("")
        return subprocess.call([str(PY), "-m", "app", *rest], cwd=ROOT)
    _ensure_venv("test")
    env = dict(os.environ)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    checks = [
        [str(PY), "-m", "ruff", "check", "."],
        [str(PY), "-m", "ruff", "format", "--check", "."],
        [str(PY), "-m", "mypy"],  # over app/, configured in pyproject.toml
        [str(BIN / "lint-imports")],  # the layer contract (cli -> ui -> core), pyproject.toml
    ]
    for check in checks:
        print("$", " ".join(Path(c).name if i == 0 else c for i, c in enumerate(check)), flush=True)
        rc = subprocess.call(check, cwd=ROOT, env=env)
        if rc != 0:
            return rc
    return subprocess.call([str(PY), "-m", "pytest", *rest], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Hardware detection: this machine (CPU only), NVML absent, nvidia-smi output, build warnings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.core import hardware
from app.core.hardware import REINSTALL, GpuInfo, build_warnings, detect, parse_nvidia_smi


def test_detection_here_reports_cpu_only_without_errors():
    profile = detect()
    assert profile.cpu.logical_cores >= 1
    assert profile.ram_total_bytes > profile.ram_available_bytes > 0
    assert profile.gpus == []  # this machine has no GPU
    assert profile.llama_backends == ["cpu"]
    assert not profile.gpu_build
    assert profile.warnings == []
    if sys.platform.startswith("linux") and "avx2" in Path("/proc/cpuinfo").read_text():
        assert "avx2" in profile.cpu.features


def test_hw_json_schema():
    out = subprocess.run(
        [sys.executable, "-m", "app", "hw", "--json"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) >= {"cpu", "ram", "gpus", "llama_backends"}
    assert set(data["ram"]) == {"total_bytes", "available_bytes"}
    assert data["gpus"] == [] and data["llama_backends"] == ["cpu"]
    assert "llama_cpp" not in out.stderr


def test_detection_does_not_import_llama_cpp():
    code = "import sys; from app.core import hardware; hardware.detect(); print('llama_cpp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_nvml_absent_is_a_note_not_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    monkeypatch.setattr(hardware.shutil, "which", lambda name: None)
    notes: list[str] = []
    assert hardware.detect_nvidia(notes) == []
    assert any("nvidia-ml-py is not installed" in n for n in notes)
    assert any("nvidia-smi: not found" in n for n in notes)
    profile = detect()
    assert profile.gpus == [] and any("NVML" in n for n in profile.notes)


def test_nvml_library_missing_is_reported():
    pytest.importorskip("pynvml")
    notes: list[str] = []
    gpus = hardware.detect_nvidia(notes)
    if gpus:  # pragma: no cover - a machine with an NVIDIA driver
        pytest.skip("NVML present here")
    assert any(n.startswith("NVML: not available") for n in notes)


def test_psutil_missing_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)
    profile = detect()
    assert profile.ram_total_bytes > 0 or any("RAM" in n for n in profile.notes)
    assert any("psutil" in n for n in profile.notes)


def test_parse_nvidia_smi():
    notes: list[str] = []
    gpus = parse_nvidia_smi("NVIDIA GeForce RTX 3060, 12288, 11800, 550.54\ngarbage line\n", notes)
    assert gpus == [GpuInfo("NVIDIA GeForce RTX 3060", "cuda", 12288 << 20, 11800 << 20, "550.54")]
    assert notes and "unreadable" in notes[0]


def test_gpu_with_cpu_only_build_warns_with_reinstall_command():
    gpu = GpuInfo("NVIDIA GeForce RTX 3060", "cuda", 12 << 30, 11 << 30)
    warnings = build_warnings([gpu], ["cpu"])
    assert len(warnings) == 1 and REINSTALL["cuda"] in warnings[0]
    assert "-DGGML_CUDA=on" in warnings[0]
    assert build_warnings([gpu], ["cuda", "cpu"]) == []
    mac = GpuInfo("Apple M1", "metal", 5 << 30, 5 << 30, unified=True)
    assert "-DGGML_METAL=on" in build_warnings([mac], ["cpu"])[0]


def test_backends_from_library_names(tmp_path):
    for name in ("libggml-base.so", "libggml-cpu.so", "libggml-cuda.so", "libllama.so"):
        (tmp_path / name).write_bytes(b"")
    notes: list[str] = []
    assert hardware.detect_backends(notes, tmp_path) == ["cuda", "cpu"]
    profile = detect(lib_dir=tmp_path)
    assert profile.gpu_build and profile.llama_backends == ["cuda", "cpu"]

"""The Hardware page: what QuantDesk found (CPU, RAM, GPUs, llama.cpp backends) and any warning.

Detection (``app.core.hardware.detect``) runs off the GUI thread, on first show and on Refresh; the
profile is shared with the Models page through ``AppContext.services["hardware"]`` so the fit
badges there use the same figures.
"""

from __future__ import annotations

import time
from importlib import metadata

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.core.hardware import GpuInfo, HardwareProfile
from app.ui.bridge import LatestTask
from app.ui.context import AppContext
from app.ui.widgets.cards import Banner, Card, PageHeader, PlainLabel, chip, flow_row, muted
from app.ui.widgets.format import human_bytes
from app.ui.widgets.memory_bar import MemoryBar, Segment

_BACKEND_NAMES = {
    "cpu": "CPU",
    "blas": "BLAS",
    "cuda": "CUDA (NVIDIA)",
    "metal": "Metal (Apple)",
    "vulkan": "Vulkan",
    "hip": "ROCm/HIP (AMD)",
    "sycl": "SYCL (Intel)",
    "opencl": "OpenCL",
}
_REINSTALL_MARK = "reinstall: "


def split_fix(warning: str) -> tuple[str, str]:
    """A core warning ends with the command that fixes it; show that part apart, copyable."""
    head, sep, command = warning.rpartition(_REINSTALL_MARK)
    if not sep:
        return warning, ""
    return head + sep.strip().rstrip(":") + ":", command.strip()


def _is_gpu_note(note: str) -> bool:
    """Notes of the GPU probes: shown in the Graphics card, not again under the other notes."""
    return note.startswith(("NVML", "nvidia-smi", "Metal", "GPU probe"))


def _llama_version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "not installed"


class HardwarePage(QWidget):
    """Cards for the processor, memory, graphics and the llama.cpp build; Refresh re-detects."""

    def __init__(self, context: AppContext) -> None:
        super().__init__()
        self.context = context
        self.profile: HardwareProfile | None = None
        self.task = LatestTask(context.runner, self)
        self.task.item_produced.connect(self._on_profile)
        self.task.failed.connect(self._on_failed)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(20, 16, 20, 16)
        header = PageHeader(
            "Hardware",
            "What QuantDesk found on this computer. Fit badges and recommendations use these figures.",
        )
        self.status = muted("", wrap=False)
        header.action_row.addWidget(self.status)
        self.refresh_button = header.add_action(QPushButton("Refresh"))
        self.refresh_button.clicked.connect(self.refresh)
        outer.addWidget(header)
        self.scroll_area = QScrollArea()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QScrollArea.Shape.NoFrame)
        outer.addWidget(self.scroll_area, 1)
        self._set_body(self._placeholder("Detecting…"))
        self._started = 0.0
        self._redetected = False
        self.refresh(redetect=False)

    def _placeholder(self, text: str) -> QWidget:
        label = PlainLabel(text)
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        label.setObjectName("muted")
        return label

    def _set_body(self, widget: QWidget) -> None:
        old = self.scroll_area.takeWidget()
        if old is not None:
            old.deleteLater()
        self.scroll_area.setWidget(widget)

    # --- detection ------------------------------------------------------------------------------
    def refresh(self, redetect: bool = True) -> None:
        """Detect again off the GUI thread (free memory changes as programs come and go).

        ``redetect=False`` shows the shared profile, detecting only when there is none yet.
        """
        self.refresh_button.setEnabled(False)
        self.status.setText("Detecting…")
        self._started = time.monotonic()
        self._redetected = redetect
        context = self.context
        self.task.start(lambda _t: context.hardware(refresh=redetect), name="hardware")

    def _on_profile(self, profile: HardwareProfile) -> None:
        self.profile = profile
        self.refresh_button.setEnabled(True)
        took = time.monotonic() - self._started
        self.status.setText(f"Detected at {time.strftime('%H:%M:%S')} in {took:.2f} s")
        self._set_body(self._build(profile))
        if self._redetected:
            self.context.events.hardware_changed.emit()

    def _on_failed(self, message: str, exc: object) -> None:
        self.refresh_button.setEnabled(True)
        self.status.setText("")
        self._set_body(self._placeholder(f"Detection failed: {message}"))

    @property
    def busy(self) -> bool:
        return self.task.busy

    # --- cards ----------------------------------------------------------------------------------
    def _build(self, profile: HardwareProfile) -> QWidget:
        body = QWidget()
        column = QVBoxLayout(body)
        column.setContentsMargins(0, 0, 8, 0)
        column.setSpacing(12)
        self.banners: list[Banner] = []
        for warning in profile.warnings:
            headline, command = split_fix(warning)
            banner = Banner(headline, kind="warning", command=command)
            self.banners.append(banner)
            column.addWidget(banner)
        grid = QGridLayout()
        grid.setSpacing(12)
        grid.addWidget(self._cpu_card(profile), 0, 0)
        grid.addWidget(self._memory_card(profile), 0, 1)
        grid.addWidget(self._gpu_card(profile), 1, 0)
        grid.addWidget(self._build_card(profile), 1, 1)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        column.addLayout(grid)
        others = [n for n in profile.notes if not _is_gpu_note(n)]
        if others:
            notes = Card("Detection notes")
            notes.add(muted("\n".join(f"• {n}" for n in others)))
            column.addWidget(notes)
        column.addStretch(1)
        return body

    def _cpu_card(self, profile: HardwareProfile) -> Card:
        cpu = profile.cpu
        card = Card("Processor")
        name = PlainLabel(cpu.name or "Unknown processor", name="bigNumber")
        name.setWordWrap(True)
        card.add(name)
        card.add(muted(f"{cpu.physical_cores} cores, {cpu.logical_cores} threads · {cpu.arch}"))
        if cpu.features:
            card.add(flow_row([chip(f.upper().replace("_", "-")) for f in cpu.features], per_row=5))
            card.add(muted("llama.cpp picks its fastest kernels from these instruction sets."))
        else:
            card.add(muted("No SIMD features detected: generation will be slow."))
        return card

    def _memory_card(self, profile: HardwareProfile) -> Card:
        card = Card("Memory")
        total, available = profile.ram_total_bytes, profile.ram_available_bytes
        card.add(PlainLabel(f"{human_bytes(total)} RAM", name="bigNumber"))
        bar = MemoryBar()
        bar.set_data(
            "System RAM",
            [
                Segment("In use", max(0, total - available), "other"),
                Segment("Available", available, "kv"),
            ],
            total,
            caption=f"{human_bytes(available)} available",
        )
        card.add(bar)
        card.add(
            muted(
                f"{human_bytes(available)} available now: the budget for models that run on the "
                "CPU (less a safety margin)."
            )
        )
        return card

    def _gpu_card(self, profile: HardwareProfile) -> Card:
        card = Card("Graphics")
        if not profile.gpus:
            card.add(PlainLabel("No GPU found", name="bigNumber"))
            card.add(muted("Models run on the CPU, from system RAM."))
            reasons = [n for n in profile.notes if _is_gpu_note(n)]
            if reasons:
                card.add(muted("\n".join(f"• {r}" for r in reasons)))
            return card
        usable = {id(g) for g in profile.usable_gpus()}
        for gpu in profile.gpus:
            card.add(self._gpu_row(gpu, id(gpu) in usable))
        return card

    def _gpu_row(self, gpu: GpuInfo, usable: bool) -> QWidget:
        row = QWidget()
        column = QVBoxLayout(row)
        column.setContentsMargins(0, 0, 0, 4)
        head = QHBoxLayout()
        head.addWidget(PlainLabel(gpu.name, name="cardTitle"))
        head.addWidget(chip(_BACKEND_NAMES.get(gpu.backend, gpu.backend)))
        if gpu.unified:
            head.addWidget(chip("unified memory"))
        head.addStretch(1)
        column.addLayout(head)
        bar = MemoryBar()
        used = max(0, gpu.total_bytes - gpu.free_bytes)
        bar.set_data(
            "GPU memory",
            [Segment("In use", used, "other"), Segment("Free", gpu.free_bytes, "weights")],
            gpu.total_bytes,
            caption=f"{human_bytes(gpu.free_bytes)} free of {human_bytes(gpu.total_bytes)}",
        )
        column.addWidget(bar)
        detail = f"driver {gpu.driver}" if gpu.driver else ""
        if not usable:
            detail = (detail + " · " if detail else "") + "this llama.cpp build cannot use it"
        if detail:
            column.addWidget(muted(detail))
        return row

    def _build_card(self, profile: HardwareProfile) -> Card:
        card = Card("llama.cpp")
        card.add(PlainLabel(f"llama-cpp-python {_llama_version()}", name="bigNumber"))
        backends = profile.llama_backends
        if backends:
            card.add(flow_row([chip(_BACKEND_NAMES.get(b, b)) for b in backends]))
        where = "GPU and CPU" if profile.gpu_build else "CPU only"
        card.add(muted(f"This build runs models on: {where}."))
        return card

    def screenshot_setup(self) -> None:
        """Nothing to prepare: detection already runs."""

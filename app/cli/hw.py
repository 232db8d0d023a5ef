"""``quantdesk hw``: what this machine offers llama.cpp (CPU, RAM, GPUs, backends of the build)."""

from __future__ import annotations

import argparse

from app.cli.common import human_bytes, print_json
from app.core.hardware import detect


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hw", help="show the CPU, RAM, GPUs and llama.cpp backends of this machine")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    profile = detect()
    if args.json:
        print_json(profile.to_json())
        return 0
    cpu = profile.cpu
    print(
        f"CPU:      {cpu.name} ({cpu.physical_cores} cores, {cpu.logical_cores} threads, {cpu.arch})"
    )
    print(f"SIMD:     {', '.join(cpu.features) or 'none detected'}")
    print(
        f"RAM:      {human_bytes(profile.ram_total_bytes)} total, "
        f"{human_bytes(profile.ram_available_bytes)} available"
    )
    if not profile.gpus:
        print("GPUs:     none found")
    for g in profile.gpus:
        kind = "unified memory" if g.unified else "VRAM"
        print(
            f"GPU:      {g.name} [{g.backend}] {human_bytes(g.total_bytes)} {kind}, "
            f"{human_bytes(g.free_bytes)} free" + (f", driver {g.driver}" if g.driver else "")
        )
    print(f"llama.cpp backends: {', '.join(profile.llama_backends) or 'none (not installed?)'}")
    for w in profile.warnings:
        print(f"warning:  {w}")
    for n in profile.notes:
        print(f"note:     {n}")
    return 0

"""The memory-setting flags shared by ``plan``, ``recommend`` and ``chat`` (one definition).

They choose what llama.cpp reserves: the plan is made for them and the engine loads with them, so
``plan --json`` reports a figure the same ``chat`` flags then really use.
"""

from __future__ import annotations

import argparse

from app.core.planning import PlanOptions

_FLASH = {"auto": None, "on": True, "off": False}


def add_memory_flags(p: argparse.ArgumentParser) -> None:
    defaults = PlanOptions()
    p.add_argument(
        "--swa-full",
        action=argparse.BooleanOptionalAction,
        default=defaults.swa_full,
        help="full-size cache for sliding-window layers: a chat rewound past the window still "
        "reuses its cache, at far more memory on long contexts (default off: only the window "
        "is kept, as llama-server does)",
    )
    p.add_argument(
        "--flash-attn",
        choices=sorted(_FLASH),
        default="auto",
        help="flash attention (auto: llama.cpp's choice, on wherever each layer's device runs it)",
    )
    p.add_argument(
        "--ubatch", type=int, default=defaults.n_ubatch, help="physical batch size (n_ubatch)"
    )
    p.add_argument(
        "--cpu-moe",
        type=int,
        default=defaults.cpu_moe_layers,
        metavar="N",
        help="keep the expert tensors of the first N layers in RAM (MoE models; like --n-cpu-moe)",
    )


def plan_options(args: argparse.Namespace, type_k: str = "f16", type_v: str = "f16") -> PlanOptions:
    return PlanOptions(
        type_k,
        type_v,
        swa_full=args.swa_full,
        flash_attn=_FLASH[args.flash_attn],
        n_ubatch=max(1, args.ubatch),
        cpu_moe_layers=max(0, args.cpu_moe),
    )

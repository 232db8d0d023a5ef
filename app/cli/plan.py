"""``quantdesk plan MODEL`` and ``quantdesk recommend REPO``: will it fit, before downloading it.

``plan`` takes a local .gguf or an http(s) URL (only the header is read).  ``recommend`` takes a Hub
repo id (variants listed by app.core.hub, headers read over HTTP Range) or a local folder of
variants.  Both go through the core planner (``app.core.planning``); budgets come from this machine
unless ``--ram-budget`` / ``--vram-budget`` ask "what if".
"""

from __future__ import annotations

import argparse
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from app.cli.common import fail, human_bytes, print_json
from app.cli.memory_flags import add_memory_flags, plan_options
from app.cli.worker import add_workers_flag, print_split, split_plan
from app.core.errors import QuantDeskError
from app.core.fit import KV_TYPES, Budget, OffloadPlan
from app.core.gguf_header import GGUFError, ModelSpec
from app.core.hardware import HardwareProfile
from app.core.planning import Planner, speed_rule
from app.core.settings import Settings
from app.core.units import parse_size

_FIRST_OR_SINGLE = re.compile(r"(?<!-\d{5}-of-\d{5})\.gguf$|-00001-of-\d{5}\.gguf$", re.IGNORECASE)


def _bytes(text: str) -> int:
    """``12G``, ``512M``, ``8GiB`` or plain bytes (argparse's type)."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ctx", type=int, default=4096, help="context size in tokens (default 4096)")
    p.add_argument("--ram-budget", type=_bytes, help="RAM to plan for (what-if), e.g. 16G")
    p.add_argument(
        "--vram-budget", type=_bytes, help="VRAM to plan for (what-if), e.g. 12G; 0: none"
    )
    p.add_argument(
        "--cache-type", default="f16", choices=sorted(KV_TYPES), help="KV cache type (K and V)"
    )
    add_memory_flags(p)
    p.add_argument("--json", action="store_true", help="print a JSON object")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="memory plan for a model (local file or URL) before loading it")
    p.add_argument("model", help="a .gguf file or an http(s) URL")
    _common(p)
    add_workers_flag(p)
    p.set_defaults(func=run_plan)
    r = sub.add_parser("recommend", help="which variant of a repo fits this machine best")
    r.add_argument("repo", help="a Hub repo id (owner/name) or a local folder of .gguf variants")
    r.add_argument(
        "--min-tok-s",
        type=float,
        default=None,
        help="the speed floor of the recommendation (default: the app's setting, 10 tokens/s)",
    )
    _common(r)
    r.set_defaults(func=run_recommend)


def _budget(planner: Planner, args: argparse.Namespace) -> Budget:
    return planner.budget(args.ram_budget, args.vram_budget)


def _budget_json(b: Budget) -> dict[str, Any]:
    return {
        "ram_bytes": b.ram_bytes,
        "vram_bytes": b.vram_bytes,
        "unified": b.unified,
        "ram_usable_bytes": b.ram_usable,
        "vram_usable_bytes": b.vram_usable,
    }


def run_plan(args: argparse.Namespace) -> int:
    if args.ctx < 1:
        return fail("--ctx must be a positive number of tokens")
    options = plan_options(args, args.cache_type, args.cache_type)
    if args.workers:
        try:
            plan = split_plan(args, options)
        except QuantDeskError as exc:  # PlanError names the worker that is not there
            return fail(str(exc))
        assert plan is not None
        print_split(plan, args.json)
        return 0
    with Planner() as planner:
        try:
            spec = planner.spec(args.model)
            budget = _budget(planner, args)
            offload = planner.fit(args.model, args.ctx, options=options, budget=budget).offload
            profile = planner.profile()
        except GGUFError as exc:
            return fail(str(exc))
        except (QuantDeskError, OSError) as exc:  # EngineError: llama.cpp refused the header
            return fail(f"llama.cpp could not plan this model: {exc}")
    out = {
        "model": args.model,
        "quant": spec.quant,
        "architecture": spec.architecture,
        "n_ctx_train": spec.n_ctx_train,
        "bits_per_weight": round(spec.bits_per_weight, 3),
        **offload.to_json(),
        "budget": _budget_json(budget),
        "notes": offload.plan.notes + profile.warnings,
        "settings": asdict(options),
    }
    if args.json:
        print_json(out)
    else:
        _print_plan(spec, offload, budget, profile)
    return 0


def _print_plan(spec: ModelSpec, o: OffloadPlan, b: Budget, profile: HardwareProfile) -> None:
    p = o.plan
    hb = human_bytes
    print(
        f"{spec.name or spec.source}: {spec.architecture}, {spec.quant}, {spec.bits_per_weight:.2f} bits/weight"
    )
    print(f"verdict:  {o.verdict} -- {o.reason}")
    print(
        f"context:  {p.n_ctx} tokens (largest that fits this way: {o.max_ctx}; trained: {spec.n_ctx_train})"
    )
    print(f"offload:  {p.n_gpu_layers} of {p.n_layers_total} layers")
    print(
        f"weights:  {hb(p.weights_bytes)} ({hb(p.weights_cpu_bytes)} CPU, {hb(p.weights_gpu_bytes)} GPU)"
    )
    print(f"KV cache: {hb(p.kv_bytes)} ({p.type_k}/{p.type_v})")
    print(
        f"compute:  {hb(p.compute_bytes)}; output {hb(p.output_bytes)}; runtime {hb(p.overhead_bytes)}"
    )
    print(
        f"RAM:      {hb(p.ram_bytes)} resident (peak while loading {hb(p.peak_ram_bytes)}) of {hb(b.ram_usable)} usable"
    )
    print(f"VRAM:     {hb(p.vram_bytes)} of {hb(b.vram_usable)} usable")
    for n in p.notes + profile.warnings:
        print(f"note:     {n}")


# ---- recommend ----------------------------------------------------------------------------------
def _local_variants(folder: Path) -> list[tuple[str, str, dict[str, str] | None]]:
    files = sorted(f for f in folder.iterdir() if f.is_file() and _FIRST_OR_SINGLE.search(f.name))
    return [(f.name, str(f), None) for f in files]


def _hub_variants(repo: str) -> list[tuple[str, str, dict[str, str] | None]]:
    from app.core import hub

    headers = hub.request_headers()
    return [
        (v.file, hub.file_url(repo, v.file, v.commit), headers) for v in hub.list_variants(repo)
    ]


def variant_sources(repo: str) -> list[tuple[str, str, dict[str, str] | None]]:
    """``(name, path or URL, request headers)`` of each variant of a Hub repo or a local folder."""
    folder = Path(repo)
    sources = _local_variants(folder) if folder.is_dir() else _hub_variants(repo)
    if not sources:
        raise GGUFError(f"no .gguf variants in {repo}")
    return sources


def run_recommend(args: argparse.Namespace) -> int:
    if args.ctx < 1:
        return fail("--ctx must be a positive number of tokens")
    options = plan_options(args, args.cache_type, args.cache_type)
    with Planner() as planner:
        try:
            budget = _budget(planner, args)
            sources = variant_sources(args.repo)
            local = {name: src for name, src, _ in sources if not src.startswith("http")}
            floor = args.min_tok_s
            if floor is None:
                floor = Settings.load().min_tokens_per_s
            rule = speed_rule(floor, local)
            rec = planner.recommend_sources(
                sources, args.ctx, options=options, budget=budget, speed=rule
            )
        except QuantDeskError as exc:  # GGUFError, HubError, EngineError: messages for people
            return fail(str(exc))
    if args.json:
        print_json({**rec.to_json(), "n_ctx": args.ctx, "budget": _budget_json(budget)})
        return 0
    print(
        f"{'file':<44} {'quant':<8} {'size':>9} {'verdict':<12} {'layers':>7} {'RAM':>9} {'VRAM':>9}"
    )
    for v in rec.variants:
        p = v.offload.plan
        mark = "*" if v is rec.recommended else " "
        print(
            f"{mark}{v.file[:43]:<43} {v.quant:<8} {human_bytes(v.size_bytes):>9} {v.verdict:<12} "
            f"{p.n_gpu_layers:>3}/{p.n_layers_total:<3} {human_bytes(p.ram_bytes):>9} "
            f"{human_bytes(p.vram_bytes):>9}"
        )
    print(f"\nrecommended: {rec.recommended.file if rec.recommended else 'none'}")
    print(f"why: {rec.reason}")
    return 0

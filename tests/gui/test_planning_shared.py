"""Every page plans through the window's one core planner (its own dry-run engine, no model)."""

from __future__ import annotations

import json

from app.core import paths
from app.core.dryrun import DryRunner
from app.core.planning import Planner

MIB = 1 << 20


def _load(qtbot, page, model) -> None:
    page.choose_model(model)
    qtbot.waitUntil(lambda: page.loaded is not None and not page.busy, timeout=120_000)
    assert page.loaded.path == str(model)


def test_chat_plans_a_second_model_like_a_fresh_planner_would(window, qtbot, tiny_models, tmp_path):
    page = window.show_page("Chat")
    page.auto_fit.setChecked(True)
    _load(qtbot, page, tiny_models["Q8_0"])
    # The chat's engine now holds a model; the next plan must not run there.
    _load(qtbot, page, tiny_models["Q4_K_M"])
    plan = page.load_plan
    assert plan is not None
    profile = window.context.hardware()
    fresh_runner = DryRunner(cache_path=tmp_path / "fresh-cache.json")
    with Planner(profile, runner=fresh_runner) as fresh:
        expected = fresh.plan_load(tiny_models["Q4_K_M"], window.context.settings.default_n_ctx)
        fresh_fit = fresh.fit(tiny_models["Q4_K_M"], expected.n_ctx)
    assert (plan.n_ctx, plan.n_gpu_layers, plan.verdict) == (
        expected.n_ctx,
        expected.n_gpu_layers,
        expected.verdict,
    )
    # RSS is measured in two processes: equal within a few MiB, never the 55 MiB gap of a plan
    # made inside an engine that holds a model.
    assert abs(plan.ram_bytes - expected.ram_bytes) < 8 * MIB, (plan, expected)
    # The runtime's share of the plan (the vocabulary's and the engine's come on top of it)
    fresh_cache = json.loads((tmp_path / "fresh-cache.json").read_text())
    runtime = {e["base_rss_bytes"] for e in fresh_cache.values()}
    assert len(runtime) == 1 and min(runtime) > 30 * MIB
    (base,) = runtime
    assert fresh_fit.offload.plan.overhead_bytes > base
    # The shared dry-run cache (what the Models and Library pages read) holds the same runtime.
    cache = json.loads((paths.cache_dir() / "dryrun-cache.json").read_text())
    assert cache, "the window's planner wrote no dry run"
    for entry in cache.values():
        assert abs(entry["base_rss_bytes"] - base) < 8 * MIB, entry["base_rss_bytes"]


def test_plans_follow_the_memory_settings_in_force(window, tiny_models):
    from app.core.planning import PlanOptions

    planner = window.context.planner
    default = planner.fit(tiny_models["Q8_0"], 2048, options=PlanOptions()).offload.plan
    window.context.settings.n_ubatch = 128
    window.context.events.settings_changed.emit()  # what the Settings page does on save
    assert planner.options.n_ubatch == 128
    smaller = planner.fit(tiny_models["Q8_0"], 2048).offload.plan  # no options: the settings'
    assert smaller.compute_bytes < default.compute_bytes  # llama.cpp reserved for 128-row batches
    assert planner.plan_load(tiny_models["Q8_0"], 2048).load_kwargs()["memory"].n_ubatch == 128

"""Speed estimates and the user's recommendation rule ("the highest quality that fits with
headroom and writes at least N tokens/s"), on 7B-shaped headers and a real bandwidth probe."""

from __future__ import annotations

import json

import pytest

from app.core import speed
from app.core.fit import GIB, MIB, Budget, DryRun
from app.core.gguf_header import read_local
from app.core.recommend import fit_variant, recommend
from app.core.speed import SpeedRule
from tests import fitshapes

QUANTS = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")


def _dry(n_ctx: int, ngl: int = 0) -> DryRun:
    return DryRun({"CPU": 72 * MIB + 64 * 1024 * n_ctx}, 128000, 0, ("CPU_REPACK",), 60 * MIB)


@pytest.fixture(scope="module")
def fits():
    budget = Budget(ram_bytes=64 * GIB)  # a CPU machine where everything fits with room
    out = {}
    for q in QUANTS:
        spec = read_local(fitshapes.write_header_only(None, fitshapes.MISTRAL_7B, q))
        out[q] = fit_variant(f"m-{q}.gguf", spec, _dry, budget, 4096)
    return out, budget


def test_the_probe_measures_and_the_cache_keeps_it(tmp_path):
    first = speed.memory_bandwidth(tmp_path)
    assert 1e8 < first < 1e13  # between a slow SD card and the fastest HBM
    record = json.loads((tmp_path / speed.CACHE_FILE).read_text())
    assert record["bytes_per_s"] == first
    assert speed.memory_bandwidth(tmp_path) == first  # cached: not measured again
    (tmp_path / speed.CACHE_FILE).write_text("{not json")
    again = speed.memory_bandwidth(tmp_path)  # damaged: measured again, written back
    assert again > 1e8 and json.loads((tmp_path / speed.CACHE_FILE).read_text())["bytes_per_s"]


def test_speed_follows_the_bytes_each_token_reads(fits):
    by, _ = fits
    rule = SpeedRule(min_tok_s=10, ram_bandwidth=20e9)
    rates = {q: rule.tokens_per_s(f.offload.plan) for q, f in by.items()}
    assert rates["Q2_K"] > rates["Q4_K_M"] > rates["Q8_0"] > rates["F16"]
    plan = by["Q8_0"].offload.plan
    cpu, gpu = speed.bytes_per_token(plan)
    assert gpu == 0 and cpu >= plan.weights_cpu_bytes
    assert rates["Q8_0"] == pytest.approx(20e9 / cpu)


def test_highest_quality_that_reaches_the_minimum_speed_and_why(fits):
    by, budget = fits
    # 50 GB/s: F16 (~14.5 GB) writes ~3.4 tokens/s, Q8_0 ~6.5, Q4_K_M ~11.
    rule = SpeedRule(min_tok_s=10, ram_bandwidth=50e9)
    rec = recommend(list(by.values()), budget, speed=rule)
    rates = {q: rule.tokens_per_s(f.offload.plan) for q, f in by.items()}
    expected = next(q for q in ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M") if rates[q] >= 10)
    assert rec.recommended is by[expected]
    # The reason says why the better, larger one was not taken.
    assert "F16 is better quality and fits too" in rec.reason and "tokens/s" in rec.reason
    assert rec.alternative is by["F16"]
    assert rec.notes[0].startswith("Rule: the highest quality") and "50.0 GB/s" in rec.notes[0]


def test_a_low_minimum_takes_the_best_quality_and_an_unreachable_one_the_fastest(fits):
    by, budget = fits
    rec = recommend(list(by.values()), budget, speed=SpeedRule(1, 50e9))
    assert rec.recommended is by["F16"] and rec.alternative is None
    rec = recommend(list(by.values()), budget, speed=SpeedRule(1000, 50e9))
    # Nothing reaches it: the fastest of good quality (never Q2/Q3 while Q4 fits).
    assert rec.recommended is by["Q4_K_M"] and "no variant of good quality" in rec.reason


def test_a_measured_speed_is_kept_per_file_and_forgotten_when_the_file_changes(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x" * 1000)
    assert speed.measured_speed(model, tmp_path) is None
    speed.record_measured(model, 42.5, tmp_path)
    assert speed.measured_speed(model, tmp_path) == 42.5
    model.write_bytes(b"x" * 2000)  # replaced by another file: the figure no longer applies
    assert speed.measured_speed(model, tmp_path) is None
    speed.record_measured(tmp_path / "gone.gguf", 10.0, tmp_path)  # no file: nothing kept
    assert speed.measured_speed(tmp_path / "gone.gguf", tmp_path) is None


def test_the_rule_prefers_a_measured_speed_to_the_estimate(fits):
    by, budget = fits
    estimate = SpeedRule(10, 50e9)
    # F16 was run here and wrote 12 tokens/s: above the minimum, so the best quality is taken.
    measured = SpeedRule(10, 50e9, measured={by["F16"].file: 12.0})
    assert recommend(list(by.values()), budget, speed=estimate).recommended is not by["F16"]
    rec = recommend(list(by.values()), budget, speed=measured)
    assert rec.recommended is by["F16"] and "about 12 tokens/s" in rec.reason
    assert "F16: measured 12.0 tokens/s" in rec.notes

"""Comparisons on real llama.cpp with the generated tiny model at several quant levels."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.core.compare import (
    CompareError,
    CompareOptions,
    Finished,
    PlanReady,
    ReplyDone,
    TextPiece,
    VariantFailed,
    VariantLoaded,
    run_compare,
)
from app.core.compare_report import CompareReport
from app.core.taskeval import FINE, INVESTIGATE, REFERENCE, PromptItem, parse_prompts

PROMPT = [PromptItem.single("Tell me about the model and its memory.")]
SHORT_TEXT = CompareOptions(max_tokens=24, reference_text_max_tokens=1500)


def _run(paths, items=PROMPT, **kw) -> tuple[list, CompareReport]:
    kw.setdefault("options", SHORT_TEXT)
    events = list(run_compare(paths, items, **kw))
    assert isinstance(events[-1], Finished)
    return events, events[-1].report


def test_quants_drift_in_order_on_the_reply_and_the_reference_text(tiny_models, tiny_f16):
    paths = [tiny_models["Q2_K"], tiny_models["Q8_0"], tiny_f16, tiny_models["Q4_K_M"]]
    opts = CompareOptions(max_tokens=40, reference_text_max_tokens=3000)
    events, report = _run(paths, options=opts)
    assert report.reference_index == 2 and report.reference == str(tiny_f16)
    by = {r.quant: r for r in report.results}
    for metrics in ("reply", "reference_text"):
        kld = {q: getattr(by[q], metrics)["kld_mean"] for q in by}
        agree = {q: getattr(by[q], metrics)["top1_agreement"] for q in by}
        assert kld["F16"] == 0.0 and agree["F16"] == 1.0  # computed, not assumed
        assert 0 < kld["Q8_0"] < kld["Q4_K_M"] < kld["Q2_K"], (metrics, kld)
        assert agree["Q8_0"] > agree["Q4_K_M"] > agree["Q2_K"], (metrics, agree)
    assert by["Q8_0"].reference_text["positions"] > 2900
    for r in report.results:
        assert r.error is None and r.text and r.load_s and r.ttft_s and r.gen_tok_s
        assert r.peak_rss_bytes > 10 << 20 and r.size_bytes > 0
    assert len({e.index for e in events if isinstance(e, TextPiece)}) == 4


def test_the_reference_against_itself_gives_zero_and_full_agreement(tiny_models, tmp_path):
    ref = tiny_models["Q4_K_M"]
    twin = tmp_path / "twin-Q4_K_M.gguf"
    shutil.copyfile(ref, twin)  # a separate engine process computes everything again
    _, report = _run([ref, twin], reference=ref)
    assert report.reference_index == 0
    other = report.results[1]
    for metrics in (other.reply, other.reference_text):
        assert metrics["positions"] > 3
        assert metrics["kld_mean"] == pytest.approx(0.0, abs=1e-6)
        assert metrics["top1_agreement"] == 1.0
    assert other.text == report.results[0].text


def test_variants_that_do_not_fit_together_run_one_after_another(tiny_models, tiny_f16):
    paths = [tiny_models["Q4_K_M"], tiny_f16]
    opts = CompareOptions(max_tokens=8, reference_text_max_tokens=600, memory_budget=60 << 20)
    events, report = _run(paths, options=opts)  # the fit plan from dry runs
    plan = events[0]
    assert isinstance(plan, PlanReady) and plan.plan.mode == "sequential"
    assert report.mode == "sequential" and "memory budget" in report.mode_reason
    assert all(n > 1 << 20 for n in plan.plan.need_bytes)
    assert sum(plan.plan.need_bytes) > 60 << 20
    # The reference (F16) runs first and is finished before the other variant loads.
    order = [
        (type(e).__name__, e.index) for e in events if isinstance(e, (VariantLoaded, ReplyDone))
    ]
    assert order == [("VariantLoaded", 1), ("ReplyDone", 1), ("VariantLoaded", 0), ("ReplyDone", 0)]
    assert report.results[0].reply["kld_mean"] > 0 and report.results[0].reference_text["positions"]
    roomy = CompareOptions(max_tokens=4, reference_text="", memory_budget=sum(plan.plan.need_bytes))
    _, together = _run(paths, options=roomy)
    assert together.mode == "parallel"


def test_task_file_scores_and_verdicts_with_a_malformed_line(tiny_models, tiny_f16):
    paths = [tiny_f16, tiny_models["Q8_0"], tiny_models["Q2_K"]]
    first = "Describe the water and the day."
    _, probe = _run(paths[:1] + paths[2:], [PromptItem.single(first)], options=_no_text(16))
    ref_words = probe.results[0].text.split()
    assert ref_words, "the reference produced no words to expect"
    lines = [
        json.dumps({"prompt": first, "expected": ref_words[0]}),
        json.dumps({"prompt": "What is the number of people?", "expected": "zzzqx"}),
        '{"prompt": "broken',
        json.dumps({"prompt": "Write about the oil."}),
    ]
    items, errors = parse_prompts("\n".join(lines))
    _, report = _run(paths, items, options=_no_text(16), task_errors=errors)
    task = report.task
    assert task is not None and [e.line for e in task.errors] == [3]
    assert task.prompts == 3 and [i.line for i in task.items] == [1, 2, 4]
    ref, q8, q2 = task.variants
    assert ref.verdict == REFERENCE and ref.score == pytest.approx((1 + 0 + 1) / 3)
    assert ref.degradation_pct == 0.0
    for v in (q8, q2):
        scores = (
            task.items[0].scores[task.variants.index(v)],
            task.items[2].scores[task.variants.index(v)],
        )
        assert v.score == pytest.approx((scores[0] + 0 + scores[1]) / 3)
        assert v.verdict == (FINE if v.degradation_pct <= 5.0 else INVESTIGATE)
    assert q2.degradation_pct > 5.0 and q2.verdict == INVESTIGATE  # Q2_K's replies differ
    assert report.results[1].reply["positions"] > 0  # drift is measured over every reply


def _no_text(max_tokens: int) -> CompareOptions:
    return CompareOptions(max_tokens=max_tokens, reference_text="")


def test_stop_ends_a_long_run_quickly_and_reports_what_ran(tiny_models, tiny_f16):
    cancel = threading.Event()
    items = [PromptItem.single(f"prompt number {i}") for i in range(20)]
    events = []
    for ev in run_compare(
        [tiny_f16, tiny_models["Q4_0"]], items, options=CompareOptions(max_tokens=400),
        cancel=cancel,
    ):  # fmt: skip
        events.append(ev)
        if isinstance(ev, TextPiece) and ev.item == 1:
            cancel.set()
    report = events[-1].report
    assert report.cancelled
    done = [e for e in events if isinstance(e, ReplyDone)]
    assert {e.item for e in done} <= {0, 1}
    assert all(e.stats.stop_reason in ("cancelled", "length", "eos") for e in done)
    assert all(r.reference_text["positions"] == 0 for r in report.results)


def test_walking_away_from_the_generator_stops_every_engine(tiny_models, tiny_f16):
    gen = run_compare([tiny_f16, tiny_models["Q8_0"]], PROMPT, options=SHORT_TEXT)
    for ev in gen:
        if isinstance(ev, TextPiece):
            break
    gen.close()  # the no_leaked_processes fixture fails the test if an engine lives on


def test_bad_inputs_give_clear_errors(tiny_models, tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("not a model")
    with pytest.raises(CompareError, match="notes.gguf.*not a GGUF"):
        list(run_compare([tiny_models["Q8_0"], bad], PROMPT))
    with pytest.raises(CompareError, match="at least two"):
        list(run_compare([tiny_models["Q8_0"]], PROMPT))
    with pytest.raises(CompareError, match="no prompt"):
        list(run_compare([tiny_models["Q8_0"], tiny_models["Q2_K"]], []))


def test_a_variant_llama_cpp_would_refuse_stops_the_run_before_loading(tiny_models, tmp_path):
    data = bytearray(Path(tiny_models["Q4_0"]).read_bytes())
    key = b"general.architecture"
    at = data.find(key) + len(key) + 12  # value type (4 bytes) and string length (8) follow
    assert data[at : at + 5] == b"llama"
    data[at : at + 5] = b"llamz"  # an architecture llama.cpp does not know
    broken = tmp_path / "broken-Q4_0.gguf"
    broken.write_bytes(bytes(data))
    with pytest.raises(CompareError, match="broken-Q4_0.gguf.*llama.cpp cannot load it"):
        next(run_compare([tiny_models["Q8_0"], broken], PROMPT, options=_no_text(8)))


def test_a_variant_that_fails_to_load_is_reported_and_the_others_finish(tiny_models, tmp_path):
    doomed = tmp_path / "doomed-Q4_0.gguf"
    shutil.copyfile(tiny_models["Q4_0"], doomed)
    paths = [tiny_models["Q8_0"], doomed, tiny_models["Q2_K"]]
    events = []
    for event in run_compare(paths, PROMPT, options=_no_text(8), reference=tiny_models["Q8_0"]):
        if isinstance(event, PlanReady):
            doomed.unlink()  # gone between the plan and its load (a removed or unmounted file)
        events.append(event)
    report = events[-1].report
    failed = [e for e in events if isinstance(e, VariantFailed)]
    assert [e.index for e in failed] == [1] and "doomed-Q4_0.gguf" in failed[0].message
    assert report.results[1].error == failed[0].message and report.results[1].text == ""
    assert report.results[0].error is None and report.results[2].error is None
    assert report.results[2].reply["kld_mean"] > 0


def test_cli_json_schema(tiny_models, tiny_f16, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "app", "compare", str(tiny_models["Q8_0"]), str(tiny_f16),
         "--prompt", "hello", "--max-tokens", "6", "--no-reference-text", "--json"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["reference"] == str(tiny_f16) and data["mode"] in ("parallel", "sequential")
    assert data["task"] is None
    keys = {"model", "quant", "size_bytes", "load_s", "ttft_s", "gen_tok_s", "peak_rss_bytes",
            "kld_mean", "top1_agreement", "text"}  # fmt: skip
    for row in data["results"]:
        assert keys <= set(row)
    assert data["results"][1]["kld_mean"] == 0.0 and data["results"][0]["kld_mean"] > 0


def test_cli_task_file_reports_bad_lines_and_sequential_reason(tiny_models, tiny_f16, tmp_path):
    task = tmp_path / "task.jsonl"
    task.write_text('{"prompt": "hello", "expected": "the"}\nnot json\n{"prompt": "hi"}\n')
    out = subprocess.run(
        [sys.executable, "-m", "app", "compare", str(tiny_models["Q2_K"]), str(tiny_f16),
         "--prompts", str(task), "--max-tokens", "6", "--no-reference-text",
         "--memory-budget", "0.01", "--json"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"{task}:2: skipped: not valid JSON" in out.stderr
    data = json.loads(out.stdout)
    assert data["mode"] == "sequential" and "memory budget" in data["mode_reason"]
    assert data["task"]["errors"] == [{"line": 2, "error": data["task"]["errors"][0]["error"]}]
    assert [v["verdict"] for v in data["task"]["variants"]][1] == REFERENCE
    assert data["task"]["prompts"] == 2


def test_cli_bad_file_exits_nonzero(tiny_models, tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_text("hello")
    out = subprocess.run(
        [sys.executable, "-m", "app", "compare", str(tiny_models["Q8_0"]), str(bad),
         "--prompt", "hi"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "not a GGUF file" in out.stderr


def test_a_reply_that_fills_the_context_is_still_scored(tiny_models, tiny_f16):
    opts = CompareOptions(max_tokens=1000, n_ctx=256, reference_text="")
    events, report = _run([tiny_f16, tiny_models["Q8_0"]], options=opts)
    reasons = {e.stats.stop_reason for e in events if isinstance(e, ReplyDone)}
    assert "context" in reasons or "eos" in reasons
    assert all(r.error is None for r in report.results)
    assert report.results[1].reply["positions"] > 0 and report.results[1].reply["kld_mean"] > 0


def test_a_header_claiming_billions_of_layers_ends_the_run_at_once(tiny_models, tmp_path):
    import time

    data = bytearray(Path(tiny_models["Q4_0"]).read_bytes())
    key = b"llama.block_count"
    at = data.find(key) + len(key)
    assert int.from_bytes(data[at : at + 4], "little") == 4  # GGUF_TYPE_UINT32
    data[at + 4 : at + 8] = (2**32 - 1).to_bytes(4, "little")
    huge = tmp_path / "huge-Q4_0.gguf"
    huge.write_bytes(bytes(data))
    t0 = time.monotonic()
    with pytest.raises(CompareError, match="huge-Q4_0.gguf.*layers"):
        next(run_compare([tiny_models["Q8_0"], huge], PROMPT, options=_no_text(8)))
    assert time.monotonic() - t0 < 5  # nothing loops over the claimed count
